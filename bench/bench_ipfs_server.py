"""The embedded node's HTTP server: its own (http.server, gpumesh.ipfs.node) against aiohttp's
(a well-kept async server with a C HTTP parser, installed with web3), serving the same commands.

    .venv/bin/python bench/bench_ipfs_server.py [SIZE_MIB=64] [BLOCKS=2000] [ROUNDS=3]

The traffic is the node's real traffic, through KuboStore (ipfshttpclient) in this process:
add of a SIZE_MIB random file, cat of it (KuboStore.cat_to), and BLOCKS small block/get requests
(raw blocks of 1-4 KiB, fetched through KuboStore's prefetch window of parallel requests). Each
round runs both servers on fresh repos, alternating; each figure is the best of ROUNDS.

The aiohttp server is a prototype, not wired in: it serves the node's `Commands` unchanged, behind
the same Request/Response API (the commands block: they run on a thread pool; the request body
and streamed replies cross between the event loop and that thread once per 1 MiB read or one
streamed chunk, and replies of one chunk are written by the loop without a crossing).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from gpumesh.ipfs.cid import CODEC_RAW, Cid  # noqa: E402
from gpumesh.ipfs.kubo import KuboStore  # noqa: E402
from gpumesh.ipfs.node import EmbeddedNode  # noqa: E402
from gpumesh.ipfs.repo import Repo  # noqa: E402
from gpumesh.ipfs.rpc_http import Request, Response, log, run_command  # noqa: E402

_HEADERS = {"Access-Control-Allow-Headers": "X-Stream-Output, X-Chunked-Output, X-Content-Length",
            "Access-Control-Expose-Headers": "X-Stream-Output, X-Chunked-Output, X-Content-Length"}


class _Body:
    """The request body for a command's thread: readinto / read, one loop crossing per call."""

    def __init__(self, content, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop

    async def _fill(self, n: int) -> list[bytes]:
        parts, got = [], 0
        while got < n:
            b = await self._content.read(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        return parts

    def _parts(self, n: int) -> list[bytes]:
        return asyncio.run_coroutine_threadsafe(self._fill(n), self._loop).result()

    def read(self, n: int = -1) -> bytes:
        return b"".join(self._parts(n if n > 0 else 1 << 62))

    def readinto(self, view: memoryview) -> int:
        at = 0
        for b in self._parts(len(view)):  # aiohttp's chunks copied once, straight into the view
            view[at : at + len(b)] = b
            at += len(b)
        return at

    @property
    def done(self) -> bool:
        return self._content.at_eof()


class _Reply(Response):
    """Response on aiohttp: a one-chunk reply is left for the loop to write; a longer stream is
    written chunk by chunk from the command's thread."""

    def __init__(self, loop, areq: web.Request, request: Request | None) -> None:
        self._loop = loop
        self._areq = areq
        self.request = request
        self.started = False
        self.sr = web.StreamResponse()
        self.pending: list[bytes] | None = None  # body the loop writes after the command returns
        self.live = False  # the stream was written from the thread

    def _head(self, status: int, ctype: str, extra: dict[str, str] | None = None,
              length: int | None = None) -> None:
        sr = self.sr
        sr.set_status(status)
        sr.headers["Content-Type"] = ctype
        sr.headers.update(_HEADERS)
        sr.headers.update(extra or {})
        if self.request is None or not self.request.body_done():
            sr.force_close()
        if length is None:
            sr.enable_chunked_encoding()
        else:
            sr.content_length = length
        self.started = True

    def json(self, obj: object, status: int = 200) -> None:
        body = (json.dumps(obj) + "\n").encode()
        self._head(status, "application/json", {"Trailer": "X-Stream-Error", "Vary": "Origin"}, len(body))
        self.pending = [body]

    def stream(self, chunks, ctype: str = "text/plain", extra: dict[str, str] | None = None) -> None:
        it = iter(chunks)
        first = next(it, b"")
        second = next(it, None)
        self._head(200, ctype, {"X-Stream-Output": "1", **(extra or {})})
        if second is None:
            self.pending = [first]
            return
        self.live = True
        run = lambda coro: asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # noqa: E731
        try:
            run(self.sr.prepare(self._areq))
            for chunk in (first, second):
                if chunk:
                    run(self.sr.write(chunk))
            for chunk in it:
                if chunk:
                    run(self.sr.write(chunk))
        except Exception as exc:  # noqa: BLE001 - cut off without the last chunk, as the node does
            log.warning("stream aborted: %s", exc)
            self._areq.transport.abort()
            return
        run(self.sr.write_eof())


class AiohttpNode(EmbeddedNode):
    def start(self) -> AiohttpNode:
        self.repo = Repo(self.repo_path)
        self.repo.lock()
        commands = self.commands_class(self.repo).table()
        loop = self._loop = asyncio.new_event_loop()
        pool = self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ipfs-cmd")

        async def handle(areq: web.Request) -> web.StreamResponse:
            if areq.method != "POST":
                return web.Response(status=405, text="405 - Method Not Allowed\n", headers={"Allow": "POST"})
            if not areq.path.startswith("/api/v0/"):
                return web.Response(status=404, text="404 page not found\n")
            name = areq.path[len("/api/v0/"):].strip("/")
            cmd = commands.get(name)
            if cmd is None:
                resp = _Reply(loop, areq, None)
                resp.error(f"unknown command {name!r}", 404, 0)
            else:
                req = Request.__new__(Request)
                q = areq.rel_url.query
                req.options = {k: q.getall(k) for k in q.keys()}
                req.args = req.options.pop("arg", [])
                req.content_type = areq.headers.get("Content-Type", "")
                req.body = _Body(areq.content, loop)
                resp = _Reply(loop, areq, req)
                await loop.run_in_executor(pool, run_command, name, cmd, req, resp)
            if not resp.live:
                await resp.sr.prepare(areq)
                for b in resp.pending or ():
                    await resp.sr.write(b)
                await resp.sr.write_eof()
            return resp.sr

        app = web.Application(client_max_size=1 << 62)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = self._runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, backlog=128)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="ipfs-aiohttp", daemon=True)
        self._thread.start()
        ready.wait()
        self._server = True  # type: ignore[assignment]
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server = None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False)
        self.repo.unlock()


def _timed(fn) -> tuple[float, float, object]:
    """(wall s, CPU s of the whole process: client, server and their threads, result)."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def _round(node_cls, src: Path, size: int, blocks: list[tuple[Cid, bytes]], tmp: str) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory(dir=tmp) as rtmp, node_cls(Path(rtmp) / "repo") as node, \
            KuboStore(node.api_multiaddr, timeout=600) as store:
        for c, b in blocks:
            node.repo.put(c, b)
        add_t, add_c, cid = _timed(lambda: store.add_path(src))
        out = Path(rtmp) / "out.bin"
        with open(out, "wb") as f:
            cat_t, cat_c, _ = _timed(lambda: store.cat_to(cid, f))
        if out.stat().st_size != size:
            raise SystemExit("cat returned a wrong size")
        get_t, get_c, got = _timed(lambda: list(store._fetch_many([c for c, _ in blocks])))
        if got != [b for _, b in blocks]:
            raise SystemExit("block/get returned wrong blocks")
        return [(add_t, add_c), (cat_t, cat_c), (get_t, get_c)]


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    nblocks = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    size = mib << 20
    servers = {"http.server (hand-written)": EmbeddedNode, f"aiohttp {aiohttp.__version__}": AiohttpNode}
    res: dict[str, list] = {k: [] for k in servers}
    blocks = []
    for i in range(nblocks):
        b = os.urandom(1024 + (i % 4) * 1024)
        blocks.append((Cid.of_block(b, version=1, codec=CODEC_RAW), b))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "data.bin"
        with open(src, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
        for _ in range(rounds):
            for name, cls in servers.items():
                res[name].append(_round(cls, src, size, blocks, tmp))
    print(f"add/cat {mib} MiB, {nblocks} block/get (1-4 KiB), best of {rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print("(wall: best of the rounds; cpu: CPU time of the whole process in that round, per GiB for "
          "add/cat, per request for block/get)")
    for name, rows in res.items():
        (add, add_c), (cat, cat_c), (get, get_c) = (min((r[i] for r in rows), key=lambda wc: wc[0]) for i in range(3))
        gib = (1 << 30) / size
        print(f"{name:<28} add {size / add / 1e6:5.0f} MB/s cpu {add_c * gib:4.2f} s/GiB   "
              f"cat {size / cat / 1e6:5.0f} MB/s cpu {cat_c * gib:4.2f} s/GiB   "
              f"block/get {nblocks / get:5.0f} req/s cpu {get_c / nblocks * 1e6:4.0f} us/req")

if __name__ == "__main__":
    main()
