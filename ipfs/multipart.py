"""Streaming multipart/form-data, both ways, as Kubo's `add` and `block/put` use it.

Pure (stdlib only). The Kubo adapter encodes uploads with `encode_parts`; the embedded node parses
them with `iter_parts`, which never holds more than one read buffer of a part in memory. Paths are
sent the way Kubo and ipfshttpclient send them: `Content-Disposition: form-data; name="file";
filename="<url-encoded path>"`, directories as empty parts of type `application/x-directory`.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from gpumesh.ipfs.errors import IpfsError

DIRECTORY_TYPE = "application/x-directory"
SYMLINK_TYPE = "application/symlink"
_READ = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OutPart:
    path: str
    content_type: str
    chunks: Iterable[bytes] = ()


def new_boundary() -> str:
    return uuid.uuid4().hex


def part_head(path: str, content_type: str, boundary: str) -> bytes:
    """The delimiter line and headers that open one part."""
    name = urllib.parse.quote(path, safe="")
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


def part_tail() -> bytes:
    return b"\r\n"


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def encode_parts(parts: Iterable[OutPart], boundary: str) -> Iterator[bytes]:
    """The body, streamed: each part's head, its chunks, its tail; then the closing delimiter.
    Its length is sum(len(part_head) + data + len(part_tail)) + len(closing)."""
    for part in parts:
        yield part_head(part.path, part.content_type, boundary)
        for chunk in part.chunks:
            if chunk:
                yield chunk
        yield part_tail()
    yield closing(boundary)


def content_type_header(boundary: str) -> str:
    return f'multipart/form-data; boundary="{boundary}"'


# ---- server side -----------------------------------------------------------------------------------
def boundary_of(content_type: str) -> str:
    for piece in content_type.split(";")[1:]:
        k, _, v = piece.strip().partition("=")
        if k.lower() == "boundary":
            return v.strip().strip('"')
    raise IpfsError("request is not multipart/form-data (no boundary)")


@dataclass
class InPart:
    path: str
    content_type: str
    stream: _PartReader


class _PartReader:
    """Reads one part's body up to (not including) the next delimiter line."""

    def __init__(self, parser: _Parser) -> None:
        self._p = parser
        self.done = False

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        out = self._p.read_body(n if n > 0 else 1 << 62)
        if not out:
            self.done = True
        return out

    def drain(self) -> None:
        while self.read(_READ):
            pass


class _Parser:
    def __init__(self, src: BinaryIO, boundary: str) -> None:
        self._src = src
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._buf = bytearray()
        self._eof = False
        self._finished = False
        self._in_body = False
        self._scan = 0

    def _fill(self, want: int) -> bool:
        while len(self._buf) < want and not self._eof:
            chunk = self._src.read(_READ)
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk
        return len(self._buf) >= want

    def start(self) -> None:
        # The first delimiter has no leading CRLF; normalise by pretending it had one.
        self._fill(len(self._delim))
        self._buf[:0] = b"\r\n"
        self._skip_to_delimiter()

    def _skip_to_delimiter(self) -> None:
        while True:
            i = self._buf.find(self._delim)
            if i >= 0:
                del self._buf[: i + len(self._delim)]
                self._after_delimiter()
                return
            if self._eof:
                raise IpfsError("malformed multipart body (missing boundary)")
            keep = len(self._delim)
            if len(self._buf) > keep:
                del self._buf[: len(self._buf) - keep]
            self._fill(len(self._buf) + _READ)

    def _after_delimiter(self) -> None:
        self._fill(2)
        if self._buf[:2] == b"--":
            self._finished = True
            return
        line_end = self._buf.find(b"\r\n")
        while line_end < 0 and not self._eof:
            self._fill(len(self._buf) + 1024)
            line_end = self._buf.find(b"\r\n")
        if line_end < 0:
            raise IpfsError("malformed multipart body")
        del self._buf[: line_end + 2]

    def headers(self) -> dict[str, str] | None:
        if self._finished:
            return None
        out: dict[str, str] = {}
        while True:
            i = self._buf.find(b"\r\n")
            while i < 0:
                if self._eof or len(self._buf) > 64 * 1024:
                    raise IpfsError("malformed multipart part headers")
                self._fill(len(self._buf) + 1024)
                i = self._buf.find(b"\r\n")
            line = bytes(self._buf[:i]).decode("utf-8", "replace")
            del self._buf[: i + 2]
            if not line:
                self._in_body = True
                return out
            add_header(out, line)

    def read_body(self, n: int) -> bytes:
        if not self._in_body:
            return b""
        dl = len(self._delim)
        while True:
            # Bytes before self._scan were searched already and cannot start a delimiter: each byte
            # of a large part is searched about once.
            i = self._buf.find(self._delim, self._scan)
            if i == 0:  # end of this part: consume the delimiter, report end of body
                del self._buf[:dl]
                self._scan = 0
                self._in_body = False
                self._after_delimiter()
                return b""
            if i > 0:
                return self._take(min(i, n))
            self._scan = max(len(self._buf) - dl + 1, 0)  # bytes that cannot start a delimiter
            safe = self._scan
            if safe > 0 and (safe >= min(n, _READ) or self._eof):
                return self._take(min(safe, n))
            if self._eof:
                raise IpfsError("malformed multipart body (truncated part)")
            self._fill(len(self._buf) + _READ)

    def _take(self, k: int) -> bytes:
        with memoryview(self._buf) as mv:
            out = bytes(mv[:k])  # one copy; deleting a bytearray's head is cheap in CPython
        del self._buf[:k]
        self._scan = max(self._scan - k, 0)
        return out


def add_header(fields: dict[str, str], line: str) -> None:
    """One part header line `Name: value` into `fields` (names lower-cased)."""
    k, _, v = line.partition(":")
    fields[k.strip().lower()] = v.strip()


def part_meta(fields: dict[str, str]) -> tuple[str, str]:
    """(filename, media type) of a part from its headers; "" when it names no file."""
    return (filename_of(fields.get("content-disposition", "")),
            fields.get("content-type", "application/octet-stream").split(";")[0].strip())


def filename_of(disposition: str) -> str:
    """The (url-decoded) filename of a part's Content-Disposition header; "" if none."""
    for piece in disposition.split(";")[1:]:
        k, _, v = piece.strip().partition("=")
        if k.lower() == "filename":
            return urllib.parse.unquote(v.strip().strip('"'))
    return ""


def iter_parts(src: BinaryIO, content_type: str) -> Iterator[InPart]:
    """Yield the parts of a multipart body in order. Read (or leave) each part's stream before the
    next one is produced; unread bytes are skipped."""
    parser = _Parser(src, boundary_of(content_type))
    parser.start()
    while True:
        headers = parser.headers()
        if headers is None:
            while src.read(_READ):  # the epilogue: read to the end so the connection can be reused
                pass
            return
        reader = _PartReader(parser)
        yield InPart(*part_meta(headers), reader)
        reader.drain()
