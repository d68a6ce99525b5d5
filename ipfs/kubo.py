"""`KuboStore`: the ContentStore adapter for any Kubo RPC API (a real Kubo, or gpumesh's embedded node).

Adapter module: imports ipfshttpclient (lazily, in the constructor). Imported through
gpumesh.ipfs.store by entry points that build a store from settings.

ipfshttpclient 0.7 refuses daemons >= 0.8.0 in `connect()`; modern Kubo reports 0.2x/0.3x. We build
`ipfshttpclient.Client` directly (its documented way to skip the check) and ask `version` ourselves.
Reads fetch the DAG's internal nodes through `block/get` and the leaf bytes through one `cat`
stream with offset/length; every block and every leaf is verified here (VerifyingReads,
gpumesh.ipfs.ranged). Uploads are hashed locally while they stream and the daemon's CID must equal
ours.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gpumesh.ipfs.apiaddr import parse_api
from gpumesh.ipfs.cid import Cid, as_cid
from gpumesh.ipfs.errors import (
    CidMismatch,
    CorruptBlock,
    IpfsApiError,
    IpfsError,
    IpfsTimeout,
    IpfsUnreachable,
    NotFound,
)
from gpumesh.ipfs.multipart import (
    DIRECTORY_TYPE,
    OutPart,
    closing,
    content_type_header,
    encode_parts,
    new_boundary,
    part_head,
    part_tail,
)
from gpumesh.ipfs.store import VerifyingReads
from gpumesh.ipfs.unixfs import FileBuilder
from gpumesh.ipfs.unixfs_dir import Entry, TreeBuilder, walk_tree

T = TypeVar("T")
_READ = 1024 * 1024
_FILE_TYPE = "application/octet-stream"
_NOT_FOUND_HINTS = ("not found", "could not find", "no link named", "not pinned")


class KuboStore(VerifyingReads):
    def __init__(
        self,
        api: str = "/ip4/127.0.0.1/tcp/5001",
        timeout: float = 60.0,
        retries: int = 2,
        prefetch: int = 4,
    ) -> None:
        import warnings

        # ipfshttpclient passes urllib3 an argument it deprecates; the warning is noise to users.
        warnings.filterwarnings("ignore", category=FutureWarning, module="urllib3")
        import ipfshttpclient  # adapter-only dependency
        import requests  # ipfshttpclient's transport; some of its errors pass through unwrapped

        self._ipfs = ipfshttpclient
        self._requests_error = requests.exceptions.RequestException
        addr = parse_api(api)
        self.api_url = addr.url
        self._client = ipfshttpclient.Client(addr.multiaddr, timeout=timeout)
        self._retries = retries
        self._pool = ThreadPoolExecutor(max_workers=max(1, prefetch), thread_name_prefix="ipfs-fetch")
        self._prefetch = max(1, prefetch)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> KuboStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- error boundary ----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        exc_mod = self._ipfs.exceptions
        attempts = 1 + (self._retries if retry else 0)
        for attempt in range(attempts):
            try:
                return fn()
            except exc_mod.ConnectionError as exc:
                err: IpfsError = IpfsUnreachable(
                    f"IPFS API at {self.api_url} is unreachable ({_reason(exc)})", api=self.api_url
                )
            except exc_mod.TimeoutError:
                err = IpfsTimeout(f"IPFS API at {self.api_url} timed out during {what}", api=self.api_url)
            except exc_mod.ErrorResponse as exc:
                msg = str(exc.args[0] if exc.args else exc)
                low = msg.lower()
                cls = (CorruptBlock if "corrupt" in low
                       else NotFound if any(h in low for h in _NOT_FOUND_HINTS) else IpfsApiError)
                raise cls(f"IPFS {what} failed: {msg}", api=self.api_url) from None
            except exc_mod.Error as exc:
                raise IpfsApiError(f"IPFS {what} failed: {exc}", api=self.api_url) from None
            except self._requests_error as exc:  # e.g. a stream the daemon cut off mid-way
                raise IpfsApiError(f"IPFS {what} failed: {type(exc).__name__}", api=self.api_url) from None
            if attempt + 1 < attempts:
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise err

    # -- reads (verified by VerifyingReads) --------------------------------------------------------
    def _get_block(self, cid: Cid) -> bytes:
        return self._call(f"block/get {cid}", lambda: self._client.block.get(str(cid)))

    def _fetch_many(self, cids: list[Cid]) -> Iterator[bytes]:
        # A bounded window of parallel block/get calls, yielded in order (lazy: no more than
        # `prefetch` blocks are in flight or waiting).
        window: deque = deque()
        it = iter(cids)
        for c in it:
            window.append(self._pool.submit(self._get_block, c))
            if len(window) >= self._prefetch:
                break
        try:
            while window:
                block = window.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    window.append(self._pool.submit(self._get_block, nxt))
                yield block
        finally:
            for f in window:
                f.cancel()

    def _fetch_range(self, cid: Cid, offset: int, length: int) -> Iterator[bytes]:
        what = f"cat {cid}"
        stream = self._call(what, lambda: self._client.cat(str(cid), offset=offset, length=length,
                                                             stream=True))
        return _GuardedStream(stream, what, self)

    # -- writes --------------------------------------------------------------------------------------
    def _add(self, parts_factory: Callable[[TreeBuilder], Iterator[OutPart]], top: str,
             cid_version: int, pin: bool, tree: TreeBuilder, specs: list[tuple[str, str, int]],
             entries: list[Entry] | None = None) -> str:
        """Upload the parts (`specs`: each part's path, content type and data length, in order);
        `entries` receives every path added, as `ipfs add` reports them (root last)."""
        boundary = new_boundary()
        raw = cid_version == 1
        opts = {
            "cid-version": str(cid_version),
            "raw-leaves": "true" if raw else "false",
            "pin": "true" if pin else "false",
            "progress": "false",
        }
        length = sum(len(part_head(p, c, boundary)) + n + len(part_tail()) for p, c, n in specs)
        body = _SizedBody(encode_parts(parts_factory(tree), boundary), length + len(closing(boundary)))
        resp = self._call(
            "add",
            lambda: self._client._client.request(
                "/add", decoder="json", data=body,
                headers={"Content-Type": content_type_header(boundary)}, opts=opts,
            ),
            retry=False,  # a streamed body cannot be replayed
        )
        local = tree.finish()
        want = str(next(e.result.cid for e in reversed(local) if e.name == top))
        got = [r.get("Hash") for r in resp if isinstance(r, dict) and r.get("Name") == top]
        if not got:
            got = [resp[-1].get("Hash")] if resp else [None]
        if got[-1] is None or as_cid(got[-1]) != as_cid(want):
            raise CidMismatch(
                f"IPFS daemon at {self.api_url} reported {got[-1]} for content whose CID is {want}",
                expected=want, reported=got[-1],
            )
        if entries is not None:
            entries.extend(local)
        return want

    def add_bytes(self, data: bytes, *, cid_version: int = 0, pin: bool = True) -> str:
        tree = TreeBuilder(cid_version=cid_version)

        def parts(t: TreeBuilder) -> Iterator[OutPart]:
            fb = t.file()

            def chunks() -> Iterator[memoryview]:
                mv = memoryview(data).cast("B")
                for i in range(0, len(mv), _READ):
                    fb.write(mv[i : i + _READ])
                    yield mv[i : i + _READ]
                t.add_file("bytes", fb.finish())

            yield OutPart("bytes", "application/octet-stream", chunks())

        size = memoryview(data).nbytes
        return self._add(parts, "bytes", cid_version, pin, tree, [("bytes", "application/octet-stream", size)])

    def add_path(self, path: str | os.PathLike, *, cid_version: int = 0, pin: bool = True,
                 entries: list[Entry] | None = None) -> str:
        """Upload a file or a directory tree; its root CID (`entries`: every path added, root last)."""
        p = Path(path)
        tree = TreeBuilder(cid_version=cid_version)
        if p.is_dir():
            items = list(walk_tree(p))
        elif p.is_file():
            items = [(p.name, "file", p)]
        else:
            raise IpfsError(f"{p} is neither a file nor a directory")
        if any(kind == "symlink" for _, kind, _ in items):
            raise IpfsError(f"{p} contains symlinks; the Kubo upload path does not send them")
        # The body's length is fixed before it is sent; each file is sent at the size it has now.
        specs = [(rel, DIRECTORY_TYPE, 0) if kind == "dir" else (rel, _FILE_TYPE, abspath.stat().st_size)
                 for rel, kind, abspath in items]

        def parts(t: TreeBuilder) -> Iterator[OutPart]:
            for (rel, kind, abspath), (_, ctype, size) in zip(items, specs, strict=True):
                if kind == "dir":
                    t.add_dir(rel)
                    yield OutPart(rel, ctype)
                else:
                    yield OutPart(rel, ctype, _tee_file(t, rel, abspath, size))

        return self._add(parts, items[0][0], cid_version, pin, tree, specs, entries)

    def pin(self, cid: str) -> None:
        self._call(f"pin/add {cid}", lambda: self._client.pin.add(str(cid)))

    def unpin(self, cid: str) -> None:
        self._call(f"pin/rm {cid}", lambda: self._client.pin.rm(str(cid)))

    def has(self, cid: str) -> bool:
        c = as_cid(cid)
        try:
            self._call(f"block/stat {c}", lambda: self._client.block.stat(str(c), offline=True))
        except (NotFound, IpfsApiError):
            return False
        return True

    def id(self) -> dict:
        return dict(self._call("id", lambda: self._client.id()))

    def version(self) -> str:
        return str(self._call("version", lambda: self._client.version())["Version"])


def _tee_file(tree: TreeBuilder, rel: str, path: Path, size: int) -> Iterator[memoryview]:
    """The first `size` bytes of the file, hashed into the tree as they are yielded. One buffer is
    reused: the sender passes each view to sendall before it asks for the next."""
    fb: FileBuilder = tree.file()
    buf = memoryview(bytearray(_READ))
    left = size
    with open(path, "rb", buffering=0) as f:
        while left:
            n = f.readinto(buf[: min(_READ, left)])
            if not n:
                raise IpfsError(f"{path} became shorter while it was being uploaded")
            fb.write(buf[:n])
            left -= n
            yield buf[:n]
    tree.add_file(rel, fb.finish())


class _SizedBody:
    """An upload body whose length is known before it is sent. requests then sends a Content-Length
    and urllib3 hands each chunk to sendall as it is; with chunked framing urllib3 copies every chunk
    into a new string (measured: ~0.1 s per 256 MiB, as long as hashing it)."""

    def __init__(self, chunks: Iterator, length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        sent = 0
        for chunk in self._chunks:
            sent += len(chunk)
            if sent > self._length:  # never: the parts are sent at their announced sizes
                raise IpfsError("upload body is longer than announced")
            yield chunk
        if sent != self._length:
            raise IpfsError("upload body is shorter than announced")


class _GuardedStream:
    """A streamed response whose transport errors surface as IpfsApiError (the ranged reader then
    falls back to verified block reads) and which can be closed early."""

    def __init__(self, inner, what: str, store: KuboStore) -> None:
        self._inner = inner
        self._it = iter(inner)
        self._what = what
        self._store = store

    def __iter__(self) -> _GuardedStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._it)
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport failure means "stop trusting the stream"
            raise IpfsApiError(f"IPFS {self._what} failed: {type(exc).__name__}",
                               api=self._store.api_url) from None

    def close(self) -> None:
        try:
            self._inner.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken stream may fail; nothing to keep
            pass


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "resolve" in text:
        return "cannot resolve host"
    return text.splitlines()[0][:120] if text else type(exc).__name__


__all__ = ["KuboStore"]
