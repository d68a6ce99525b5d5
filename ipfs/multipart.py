"""Streaming multipart/form-data, both ways, as Kubo's `add` and `block/put` use it.

Pure (stdlib only). The Kubo adapter encodes uploads with `encode_parts`; the embedded node parses
them with `Parser` (add pipelines it with the import, gpumesh.ipfs.upload; block/put reads its
small parts with `each_part`), which holds a part's bytes only in its ring of read buffers. Paths are
sent the way Kubo and ipfshttpclient send them: `Content-Disposition: form-data; name="file";
filename="<url-encoded path>"`, directories as empty parts of type `application/x-directory`.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gpumesh.ipfs.errors import IpfsError

DIRECTORY_TYPE = "application/x-directory"
SYMLINK_TYPE = "application/symlink"


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


HEADERS_MAX = 64 * 1024  # one part's header block
# What Parser reports, in body order: (PART, path, media type) opens a part (unnamed parts are named
# "\0unnamedN"), (DATA, view) is some of its bytes, (END,) closes it; (RELEASE, i) says the parser
# is past ring buffer i: once the consumer is done with the views into it, it hands i back.
DATA, RELEASE, PART, END = 0, 1, 2, 3


class Parser:
    """The node's one multipart/form-data parser (add and block/put). It reads the body into a ring
    of buffers (`body.readinto`: the socket's bytes land once, in place; it must return 0 only at the
    body's end), finds the delimiters there (`find` over the filled region; a byte is searched about
    once: only the last len(delimiter)-1 bytes of a region are searched again, after the next read)
    and reports each part's bytes as memoryviews into the ring, never copies.

    `take()` returns the index of a buffer the parser may fill (blocking until the consumer hands
    one back, and raising the consumer's error if it failed); `put(event)` reports an event."""

    def __init__(self, body, content_type: str, bufs: list, take: Callable[[], int],
                 put: Callable[[tuple], None]) -> None:
        size = len(bufs[0])
        boundary = boundary_of(content_type)
        self._body = body
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        if not boundary or 4 * len(self._delim) > size:
            raise IpfsError("multipart boundary is empty or too long")
        self._take = take
        self._put = put
        self._bufs = bufs
        self._views = [memoryview(b) for b in bufs]
        self._headers_max = min(HEADERS_MAX, size // 2)
        self._cur = take()
        self._start = self._end = 0
        self._eof = False
        self._unnamed = 0

    def release(self) -> None:
        for v in self._views:
            v.release()

    def _more(self) -> bool:
        """Read more of the body after what is unconsumed; False at its end."""
        if self._eof:
            return False
        if self._end == len(self._bufs[self._cur]):
            # Full: carry the unconsumed tail (< one delimiter, or a partial header block) into the
            # next free buffer and give this one back once the consumer is past its views.
            nxt = self._take()
            k = self._end - self._start
            self._views[nxt][:k] = self._views[self._cur][self._start : self._end]
            self._put((RELEASE, self._cur))
            self._cur, self._start, self._end = nxt, 0, k
        n = self._body.readinto(self._views[self._cur][self._end :])
        if not n:
            self._eof = True
            return False
        self._end += n
        return True

    def _need(self, n: int) -> bool:
        while self._end - self._start < n:
            if not self._more():
                return False
        return True

    def _find(self, what: bytes) -> int:
        """Position of `what` at or after start, reading on as needed; -1 at the body's end."""
        rel = 0  # offset from start already searched (start moves when the buffer changes)
        while True:
            i = self._bufs[self._cur].find(what, self._start + rel, self._end)
            if i >= 0:
                return i
            if self._end - self._start > self._headers_max:
                raise IpfsError("malformed multipart body (a header line is too long)")
            rel = max(self._end - self._start - len(what) + 1, 0)
            if not self._more():
                return -1

    def run(self) -> None:
        """Parse the body to its very end (the epilogue too, so the connection can be reused)."""
        dl = len(self._delim)
        # The first delimiter has no CRLF before it when there is no preamble.
        if self._need(dl - 2) and self._bufs[self._cur][self._start : self._start + dl - 2] == self._delim[2:]:
            self._start += dl - 2
        elif not self._skip_body(emit=False):
            raise IpfsError("malformed multipart body (missing boundary)")
        while True:
            if not self._need(2):
                raise IpfsError("malformed multipart body")
            buf = self._bufs[self._cur]
            if buf[self._start : self._start + 2] == b"--":
                while self._more():
                    self._start = self._end
                return
            i = self._find(b"\r\n")  # the rest of the delimiter line
            if i < 0:
                raise IpfsError("malformed multipart body")
            self._start = i + 2
            path, ctype = self._headers()
            self._put((PART, path, ctype))
            if not self._skip_body(emit=True):
                raise IpfsError("malformed multipart body (truncated part)")
            self._put((END,))

    def _headers(self) -> tuple[str, str]:
        fields: dict[str, str] = {}
        while True:
            i = self._find(b"\r\n")
            if i < 0:
                raise IpfsError("malformed multipart part headers")
            line = bytes(self._bufs[self._cur][self._start : i]).decode("utf-8", "replace")
            self._start = i + 2
            if not line:
                break
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        path = filename_of(fields.get("content-disposition", ""))
        ctype = fields.get("content-type", "application/octet-stream").split(";")[0].strip()
        if not path:
            self._unnamed += 1
            path = f"\0unnamed{self._unnamed}"
        return path, ctype

    def _skip_body(self, emit: bool) -> bool:
        """Pass the bytes up to the next delimiter on (emit) or drop them; consume the delimiter.
        False if the body ends first."""
        delim, dl = self._delim, len(self._delim)
        while True:
            buf, start, end = self._bufs[self._cur], self._start, self._end
            i = buf.find(delim, start, end)
            if i >= 0:
                if emit and i > start:
                    self._put((DATA, self._views[self._cur][start:i]))
                self._start = i + dl
                return True
            safe = end - dl + 1  # the last dl-1 bytes may begin a delimiter: keep them
            if safe > start:
                if emit:
                    self._put((DATA, self._views[self._cur][start:safe]))
                self._start = safe
            if not self._more():
                return False


def filename_of(disposition: str) -> str:
    """The (url-decoded) filename of a part's Content-Disposition header; "" if none."""
    for piece in disposition.split(";")[1:]:
        k, _, v = piece.strip().partition("=")
        if k.lower() == "filename":
            return urllib.parse.unquote(v.strip().strip('"'))
    return ""


def each_part(body, content_type: str, limit: int, on_part: Callable[[bytes], None],
              size: int = 256 * 1024) -> None:
    """Parse a body of small parts on this thread: `on_part(data)` at the end of each part, in
    order; a part over `limit` bytes is an error (raised before more of it is read)."""
    free = [0, 1]  # two buffers: the parser fills one while it carries a tail over from the other
    data = bytearray()

    def put(ev: tuple) -> None:
        op = ev[0]
        if op == DATA:
            if len(data) + len(ev[1]) > limit:
                raise IpfsError(f"produced block is over {limit} bytes")
            data.extend(ev[1])
        elif op == RELEASE:
            free.append(ev[1])
        elif op == PART:
            data.clear()
        else:
            on_part(bytes(data))

    parser = Parser(body, content_type, [bytearray(size), bytearray(size)], free.pop, put)
    try:
        parser.run()
    finally:
        parser.release()
