"""`EmbeddedNode`: a Kubo-RPC-compatible IPFS node in this process (standard-library HTTP server).

Entry-point module: imported by the CLI (`gpumesh ipfs daemon`), the devnet launcher and tests.
It has no libp2p networking: it is the local block store + RPC API that gpumesh needs where no
Kubo binary can run. Binds to loopback by default; only POST is accepted (405 otherwise, as Kubo).
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gpumesh.ipfs.errors import IpfsError
from gpumesh.ipfs.repo import Repo, _atomic_write
from gpumesh.ipfs.rpc import Commands
from gpumesh.ipfs.rpc_http import dispatch, log


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gpumesh-ipfs"
    # Responses end with a small write (the last chunk); with Nagle on, each one waits for the
    # client's delayed ACK (~40 ms per request), which made block-by-block reads crawl.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        dispatch(self, self.server.commands)

    def _not_allowed(self) -> None:
        body = b"405 - Method Not Allowed\n"
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default listen backlog (5) drops the SYNs of a client that prefetches blocks in parallel,
    # and each dropped SYN costs a 1 s retransmit.
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], commands: dict) -> None:
        self.commands = commands
        # Open connections, so that stop() can end idle keep-alive ones (their threads would
        # otherwise wait for a next request that a stopped node must not serve).
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's API
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # noqa: ANN001
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # A client that hangs up mid-request is routine for a daemon: log it, print no traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EmbeddedNode:
    """start() binds and serves in a background thread; stop() shuts down cleanly. Reusable as a
    context manager. `api_url` / `api_multiaddr` are valid once started. Subclasses may set
    `commands_class` (tests use it to build a daemon that lies)."""

    commands_class = Commands

    def __init__(self, repo: str | os.PathLike, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repo_path = Path(repo)
        self.host = host
        self.port = port
        self.repo: Repo | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_multiaddr(self) -> str:
        self._require_started()
        proto = "ip6" if ":" in self.host else "ip4"
        return f"/{proto}/{self.host}/tcp/{self.port}"

    @property
    def api_url(self) -> str:
        self._require_started()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _require_started(self) -> None:
        if self._server is None:
            raise IpfsError("the embedded IPFS node is not running")

    def start(self) -> EmbeddedNode:
        if self._server is not None:
            return self
        self.repo = Repo(self.repo_path)
        self.repo.lock()
        try:
            server = _Server((self.host, self.port), self.commands_class(self.repo).table())
        except OSError as exc:
            self.repo.unlock()
            raise IpfsError(f"cannot listen on {self.host}:{self.port} ({exc.strerror})") from None
        self._server = server
        self.port = server.server_address[1]
        _atomic_write(self.repo_path / "api", (self.api_multiaddr + "\n").encode())
        self._thread = threading.Thread(target=server.serve_forever, name="ipfs-rpc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        (self.repo_path / "api").unlink(missing_ok=True)
        if self.repo is not None:
            self.repo.unlock()

    def wait(self, stop_event: threading.Event) -> None:
        """Block until `stop_event` is set (the CLI sets it from SIGTERM/SIGINT), then stop."""
        try:
            stop_event.wait()
        finally:
            self.stop()

    def __enter__(self) -> EmbeddedNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
