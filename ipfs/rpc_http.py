"""HTTP plumbing of the embedded node: request bodies (chunked or sized), Kubo-style responses
(JSON, NDJSON, chunked streams, `{"Message", "Code", "Type": "error"}` errors) and the dispatcher.

Adapter-internal: imported by gpumesh.ipfs.rpc (the commands) and gpumesh.ipfs.node.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO

from gpumesh.ipfs.errors import IpfsError, NotFound

log = logging.getLogger("gpumesh.ipfs.node")

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class ClientError(IpfsError):
    """A bad request (missing argument, bad option): Kubo answers 400 with Code 1."""


class _Chunked:
    """Decodes a chunked request body (requests sends streamed uploads this way)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._left = 0
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if self._eof or not self._next_chunk():
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._raw.read(want)
        if not data:
            raise ClientError("truncated chunked request body")
        self._left -= len(data)
        if self._left == 0:
            self._raw.readline(16)
        return data

    def readinto(self, view: memoryview) -> int:
        """Up to len(view) bytes of the current chunk, straight into `view`; 0 at the end."""
        if self._eof or not self._next_chunk():
            return 0
        n = self._raw.readinto(view[: min(len(view), self._left)])  # fills it unless the peer left
        if not n:
            raise ClientError("truncated chunked request body")
        self._left -= n
        if self._left == 0:
            self._raw.readline(16)
        return n

    def _next_chunk(self) -> bool:
        if self._left == 0:
            line = self._raw.readline(1024)
            try:
                self._left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ClientError("malformed chunked request body") from None
            if self._left == 0:
                while self._raw.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._eof = True
                return False
        return True

    @property
    def done(self) -> bool:
        return self._eof


class _Sized:
    def __init__(self, raw: BinaryIO, length: int) -> None:
        self._raw = raw
        self._left = length

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._raw.read(self._left if n < 0 else min(n, self._left))
        if not data:
            raise ClientError("truncated request body")
        self._left -= len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        """Up to len(view) bytes straight into `view` (a buffered socket reader fills it unless
        the peer left); 0 at the end of the body."""
        if self._left <= 0:
            return 0
        n = self._raw.readinto(view[: min(len(view), self._left)])
        if not n:
            raise ClientError("truncated request body")
        self._left -= n
        return n

    @property
    def done(self) -> bool:
        return self._left <= 0


class Request:
    """What a command sees: query options, positional args and the body stream."""

    def __init__(self, handler: BaseHTTPRequestHandler, query: str) -> None:
        self.options = urllib.parse.parse_qs(query, keep_blank_values=True)
        self.args = self.options.pop("arg", [])
        self.content_type = handler.headers.get("Content-Type", "")
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            self.body: BinaryIO = _Chunked(handler.rfile)  # type: ignore[assignment]
        else:
            self.body = _Sized(handler.rfile, int(handler.headers.get("Content-Length") or 0))  # type: ignore[assignment]

    def opt(self, name: str, default: str | None = None) -> str | None:
        v = self.options.get(name)
        return v[-1] if v else default

    def flag(self, name: str, default: bool) -> bool:
        v = self.opt(name)
        if v is None or v == "":
            return default if v is None else True
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise ClientError(f'invalid value "{v}" for option "{name}": not a boolean')

    def integer(self, name: str, default: int) -> int:
        v = self.opt(name)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise ClientError(f'invalid value "{v}" for option "{name}": not an integer') from None

    def body_done(self) -> bool:
        """True when the whole request body has been read: only then may the connection carry
        another request (keep-alive); otherwise the rest would be parsed as one."""
        return self.body.done  # type: ignore[attr-defined]

    def arg(self, what: str = "ipfs-path") -> str:
        if not self.args:
            raise ClientError(f'argument "{what}" is required')
        return self.args[0]


class Response:
    def __init__(self, handler: BaseHTTPRequestHandler, request: Request | None = None) -> None:
        self._h = handler
        self.request = request
        self.started = False

    def _head(self, status: int, ctype: str, extra: dict[str, str] | None = None,
              length: int | None = None) -> None:
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Access-Control-Allow-Headers", "X-Stream-Output, X-Chunked-Output, X-Content-Length")
        h.send_header("Access-Control-Expose-Headers", "X-Stream-Output, X-Chunked-Output, X-Content-Length")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        if self.request is None or not self.request.body_done():
            # Part of the request body is still unread: this connection cannot be reused.
            h.send_header("Connection", "close")
            h.close_connection = True
        if length is None:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        self.started = True

    def json(self, obj: object, status: int = 200) -> None:
        body = (json.dumps(obj) + "\n").encode()
        self._head(status, "application/json", {"Trailer": "X-Stream-Error", "Vary": "Origin"}, len(body))
        self._h.wfile.write(body)

    def error(self, message: str, status: int = 500, code: int = 0) -> None:
        self.json({"Message": message, "Code": code, "Type": "error"}, status)

    def stream(self, chunks: Iterable[bytes], ctype: str = "text/plain",
               extra: dict[str, str] | None = None) -> None:
        """Chunked body. If the source fails mid-way (e.g. a corrupt block), the response is cut
        off without its final chunk, so no client can mistake a partial body for a whole one."""
        it = iter(chunks)
        first = next(it, b"")  # fail before the status line when the very first read fails
        self._head(200, ctype, {"X-Stream-Output": "1", **(extra or {})})
        w = self._h.wfile
        sock = self._h.connection
        try:
            for chunk in _prepend(first, it):
                if chunk:
                    _send_parts(sock, (b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        except Exception as exc:  # noqa: BLE001 - logged, then the connection is aborted
            log.warning("stream aborted: %s", exc)
            self._h.close_connection = True
            return
        w.write(b"0\r\n\r\n")

    def ndjson(self, objs: Iterable[object]) -> None:
        self.stream(((json.dumps(o) + "\n").encode() for o in objs), "application/json",
                    {"X-Chunked-Output": "1"})


def _send_parts(sock, parts: tuple[bytes, ...]) -> None:
    """One chunk of a chunked body, sent without copying the payload into a new string (wfile is
    unbuffered in http.server, so writing to the socket directly keeps the order)."""
    sent = sock.sendmsg(parts)
    total = sum(len(p) for p in parts)
    if sent < total:  # rare: a partial send; finish it the simple way
        sock.sendall(b"".join(parts)[sent:])


def _prepend(first: bytes, rest):
    yield first
    yield from rest


Command = Callable[[Request, Response], None]


def dispatch(handler: BaseHTTPRequestHandler, commands: dict[str, Command]) -> None:
    url = urllib.parse.urlsplit(handler.path)
    if not url.path.startswith("/api/v0/"):
        body = b"404 page not found\n"
        handler.send_response(404)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")  # the request body (if any) is left unread
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True
        return
    name = url.path[len("/api/v0/") :].strip("/")
    cmd = commands.get(name)
    if cmd is None:
        Response(handler).error(f"unknown command {name!r}", 404, 0)
        return
    req = Request(handler, url.query)
    resp = Response(handler, req)
    run_command(name, cmd, req, resp)
    # Whatever the command left unread must not be parsed as the next request; a fully read
    # request leaves the connection open for the next one (HTTP/1.1 keep-alive).
    if not req.body_done():
        handler.close_connection = True


def run_command(name: str, cmd: Command, req: Request, resp: Response) -> None:
    """Run one command; an error becomes a Kubo-shaped answer if nothing was sent yet."""
    try:
        cmd(req, resp)
    except ClientError as exc:
        if not resp.started:
            resp.error(str(exc), 400, 1)
    except (IpfsError, OSError) as exc:
        if not resp.started:
            resp.error(str(exc), 500, 0)
        log.info("%s failed: %s", name, exc)
    except Exception as exc:  # noqa: BLE001 - a daemon must answer, not die
        log.exception("%s crashed", name)
        if not resp.started:
            resp.error(f"internal error: {type(exc).__name__}: {exc}", 500, 0)


__all__ = ["ClientError", "Command", "NotFound", "Request", "Response", "dispatch", "run_command"]
