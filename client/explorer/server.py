"""The explorer's HTTP layer on Python's standard library (http.server.ThreadingHTTPServer): the static
page (static/, package data), the JSON API of gpumesh.client.explorer.api, server-sent events
(/api/stream: one `head` event per new block the follower has read, and a comment every 15 s to keep
proxies from closing the stream), and /ipfs/CID (a file read through the configured IPFS API, every
block hashed against its CID, so the page's outputs links work without a gateway).

Why the standard library: the explorer serves one local user a page and a few small JSON answers,
so threads per connection are plenty; http.server is maintained with Python and adds no dependency
or build step. `ExplorerServer(explorer, host, port)` binds at once (port 0: a free one);
`start()` runs the follower and the server in daemon threads, `stop()` ends both.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

from gpumesh.client.core.errors import GpumeshError, UsageError
from gpumesh.client.explorer.api import answer
from gpumesh.client.explorer.reader import Explorer, NotFound

log = logging.getLogger("gpumesh.explorer")

STATIC = ("index.html", "app.js", "style.css")
KEEPALIVE_SECONDS = 15.0
#: The page loads only its own files and talks only to this server.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"


class Follower:
    """Calls explorer.sync() every `interval` seconds; wakes stream readers when the head moves."""

    def __init__(self, explorer: Explorer, interval: float) -> None:
        self.explorer, self.interval = explorer, interval
        self.version = 0
        self.error: str | None = None
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        try:
            moved = self.explorer.sync()
            if self.error:
                log.info("explorer: the chain answers again")
            self.error = None
        except Exception as exc:  # noqa: BLE001 - an RPC outage: say so once, keep trying
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            if msg != self.error:
                log.warning("explorer: cannot read the chain (%s); retrying every %.1fs", msg, self.interval)
            self.error, moved = msg, False
        if moved:
            with self.changed:
                self.version += 1
                self.changed.notify_all()

    def start(self) -> None:
        def loop() -> None:
            while not self.stopping.wait(self.interval):
                self.tick()

        self._thread = threading.Thread(target=loop, name="explorer-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("explorer: %s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path = url.path
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/") and path[len("/static/"):] in STATIC:
                return self._static(path[len("/static/"):])
            if path == "/api/stream":
                return self._stream()
            if path.startswith("/api/"):
                data = answer(self.server.explorer, path, dict(parse_qsl(url.query)))
                if self.server.follower is not None and self.server.follower.error:
                    data = {**data, "rpc_error": self.server.follower.error}
                return self._json(200, data)
            if path.startswith("/ipfs/"):
                return self._ipfs(path[len("/ipfs/"):], dict(parse_qsl(url.query)).get("filename"))
            return self._json(404, {"error": f"no such page: {path[:100]}"})
        except NotFound as exc:
            return self._json(404, {"error": str(exc)})
        except UsageError as exc:
            return self._json(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            return None
        except GpumeshError as exc:
            return self._json(502, {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        except Exception as exc:  # noqa: BLE001 - one line to the page, the story in the log
            log.warning("explorer: %s failed: %s", path[:100], exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return self._json(500, {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]})

    def _static(self, name: str) -> None:
        body = resources.files("gpumesh.client.explorer").joinpath("static", name).read_bytes()
        ctype = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
        self._send(200, body, ctype + "; charset=utf-8")

    def _ipfs(self, cid: str, filename: str | None) -> None:
        from gpumesh.ipfs.cid import Cid

        try:
            Cid.parse(cid)
        except Exception:  # noqa: BLE001 - any parse failure is a bad request
            raise UsageError(f"not a CID: {cid[:80]!r}") from None
        data = self.server.explorer.cat(cid, self.server.max_file_bytes + 1)
        if len(data) > self.server.max_file_bytes:
            raise UsageError(f"{cid} is larger than {self.server.max_file_bytes:,} bytes: fetch it with `gpumesh ipfs get`")
        name = (filename or cid).replace('"', "")[:100]
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(200, data, ctype, {"Content-Disposition": f'attachment; filename="{name}"'})

    def _stream(self) -> None:
        f = self.server.follower
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seen = -1
        while not self.server.stopping.is_set():
            if f is not None and f.version != seen:
                seen = f.version
                ov = self.server.explorer.overview()
                payload = json.dumps({"head": ov["head"], "now": ov["now"], "events": ov["events"], "version": seen,
                                      "rpc_error": f.error})
                self.wfile.write(f"event: head\ndata: {payload}\n\n".encode())
            else:
                self.wfile.write(b": keepalive\n\n")
            self.wfile.flush()
            if f is None:
                return
            with f.changed:
                f.changed.wait_for(lambda v=seen: f.version != v or self.server.stopping.is_set(),
                                   timeout=KEEPALIVE_SECONDS)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, explorer: Explorer, follower: Follower | None, max_file_bytes: int) -> None:
        super().__init__(addr, _Handler)
        self.explorer, self.follower, self.max_file_bytes = explorer, follower, max_file_bytes
        self.stopping = threading.Event()


class ExplorerServer:
    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 0, interval: float = 1.0,
                 max_file_bytes: int = 256 << 20) -> None:
        self.explorer = explorer
        self.follower = Follower(explorer, interval)
        self.httpd = _Server((host, port), explorer, self.follower, max_file_bytes)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def start(self) -> ExplorerServer:
        self.follower.tick()  # the first page shows the chain as it is now
        self.follower.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="explorer-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.stopping.set()
        self.follower.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_until_interrupted(self) -> None:
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()
