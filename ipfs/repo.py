"""The embedded node's repository on disk: a crash-safe, self-verifying block store and a pin set.

Adapter-internal: imported only by gpumesh.ipfs.rpc and gpumesh.ipfs.node.

Layout (REPO/):  blocks/XY/<KEY>.data   KEY = base32 (upper, unpadded) of the multihash, as Kubo's
                                        flatfs names blocks; XY = the next-to-last two characters
                 pins.json              {"recursive": [CID, ...]}
                 identity.json          the node's stable peer ID
                 api                    the RPC multiaddr while the node runs (as Kubo writes it)
                 repo.lock              held (flock) by the running node
Every write goes to a temp file in the same folder, is fsynced, then renamed over the target, and
the folder is fsynced: after a crash a block is either absent or complete. `add` writes its blocks
through a `BlockBatch`: a small thread pool writes + fsyncs + renames each block while the import
goes on (the disk works while the CPU hashes), and `commit()` waits for all of them and fsyncs each
touched folder once before `add` answers. Every read re-hashes the block; a block that no longer
matches its CID raises CorruptBlock and is never served.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid, b32encode, b58encode
from gpumesh.ipfs.errors import CorruptBlock, IpfsError, NotFound
from gpumesh.ipfs.reader import VerifiedBlock


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# Blocks written in parallel by a BlockBatch, and how many may wait in memory for the pool (bounded
# memory: at most this many blocks of an upload are held beyond the one being imported).
WRITERS = 4
MAX_PENDING = 32


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Repo:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.blocks_dir = self.path / "blocks"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pins: set[Cid] = set()
        pins = self.path / "pins.json"
        if pins.exists():
            self._pins = {Cid.parse(c) for c in json.loads(pins.read_text())["recursive"]}
        ident = self.path / "identity.json"
        if not ident.exists():
            # No libp2p networking here: the ID only names this node, in Kubo's peer-ID format
            # (identity multihash of an Ed25519 public-key protobuf), from a random 32-byte value.
            _atomic_write(ident, json.dumps({"seed": secrets.token_hex(32)}).encode())
        seed = bytes.fromhex(json.loads(ident.read_text())["seed"])
        pubkey_pb = b"\x08\x01\x12\x20" + seed
        self.peer_id = b58encode(b"\x00" + bytes([len(pubkey_pb)]) + pubkey_pb)

    # -- lifecycle -----------------------------------------------------------------------------------
    def lock(self) -> None:
        fd = os.open(self.path / "repo.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise IpfsError(f"repo {self.path} is locked by another running node") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def writer_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="ipfs-blockwrite")
            return self._pool

    def batch(self) -> BlockBatch:
        return BlockBatch(self)

    # -- blocks -------------------------------------------------------------------------------------
    def _file(self, cid: Cid) -> Path:
        key = b32encode(cid.multihash).upper()
        return self.blocks_dir / key[-3:-1] / f"{key}.data"

    def has(self, cid: Cid) -> bool:
        return self._file(cid).exists()

    def put(self, cid: Cid, block: bytes) -> bool:
        """Store a block (verified first), durably. Returns False if it was already there."""
        if not cid.matches(block):
            raise IpfsError(f"refusing to store a block that does not match {cid}")
        f = self._file(cid)
        if f.exists():
            return False
        f.parent.mkdir(exist_ok=True)
        _atomic_write(f, block)
        _fsync_dir(f.parent)
        return True

    def get(self, cid: Cid) -> VerifiedBlock:
        """The block, re-hashed now; marked as verified so the DAG reader does not hash it again."""
        try:
            block = self._file(cid).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"block was not found locally (offline): {cid}") from None
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"block {cid} on disk is corrupt (its content no longer matches its hash)")
        return VerifiedBlock(block, cid.digest)

    def size(self, cid: Cid) -> int:
        try:
            return self._file(cid).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"block was not found locally (offline): {cid}") from None

    def delete(self, cid: Cid) -> None:
        try:
            self._file(cid).unlink()
        except FileNotFoundError:
            raise NotFound(f"block was not found locally (offline): {cid}") from None

    def all_keys(self) -> Iterator[Cid]:
        """Every stored block as a CIDv1 (raw codec unless it decodes as dag-pb: Kubo keys by
        multihash only, so the codec is a guess; gc and listings only need the multihash)."""
        from gpumesh.ipfs.cid import b32decode

        for f in self.blocks_dir.glob("*/*.data"):
            mh = b32decode(f.name[: -len(".data")].lower())
            yield Cid(1, CODEC_RAW, mh[2:])

    # -- pins ---------------------------------------------------------------------------------------
    @property
    def pins(self) -> set[Cid]:
        with self._lock:
            return set(self._pins)

    def _save_pins(self) -> None:
        data = json.dumps({"recursive": sorted(str(c) for c in self._pins)}).encode()
        _atomic_write(self.path / "pins.json", data)
        _fsync_dir(self.path)

    def add_pin(self, cid: Cid) -> None:
        with self._lock:
            if cid not in self._pins:
                self._pins.add(cid)
                self._save_pins()

    def remove_pin(self, cid: Cid) -> None:
        with self._lock:
            if cid not in self._pins:
                raise IpfsError(f"{cid} is not pinned or pinned indirectly")
            self._pins.discard(cid)
            self._save_pins()


class BlockBatch:
    """The blocks of one `add`, written in the background: `put()` hands a block to the repo's
    writer pool (temp file + fsync + rename each) and returns; `commit()` waits for every write,
    fsyncs each folder it touched once, and only then may the caller acknowledge the blocks.

    Crash safety is the same as `Repo.put`: a block file is renamed into place only after its bytes
    are on disk, so a crash leaves each block absent or complete; blocks that were renamed but not
    yet committed are merely unpinned (repo gc removes them). `put()` trusts `cid` (the importer has
    just computed it from these bytes); every later read re-hashes the block anyway.
    """

    def __init__(self, repo: Repo) -> None:
        self._repo = repo
        self._pool = repo.writer_pool()
        self._slots = threading.BoundedSemaphore(MAX_PENDING)
        self._futures: list[Future] = []
        self._seen: set[bytes] = set()
        self._dirs: set[Path] = set()

    def put(self, cid: Cid, block: bytes) -> None:
        if cid.digest in self._seen:
            return
        self._seen.add(cid.digest)
        f = self._repo._file(cid)
        if f.exists():
            return
        if f.parent not in self._dirs:
            f.parent.mkdir(exist_ok=True)
            self._dirs.add(f.parent)
        self._slots.acquire()  # bounded memory: wait while MAX_PENDING blocks are queued
        try:
            fut = self._pool.submit(self._write, f, block)
        except BaseException:
            self._slots.release()
            raise
        self._futures.append(fut)
        if len(self._futures) >= 4 * MAX_PENDING:  # keep the list short; surface errors early
            self._reap(wait=False)

    def _write(self, f: Path, block: bytes) -> None:
        try:
            _atomic_write(f, block)
        finally:
            self._slots.release()

    def _reap(self, wait: bool) -> None:
        keep = []
        for fut in self._futures:
            if wait or fut.done():
                fut.result()  # raises the first write error
            else:
                keep.append(fut)
        self._futures = keep

    def commit(self) -> None:
        self._reap(wait=True)
        for fut in [self._pool.submit(_fsync_dir, d) for d in self._dirs]:
            fut.result()
        self._dirs.clear()

    def abort(self) -> None:
        """Wait for the writes in flight (so none lands after the caller moved on); errors ignored."""
        for fut in self._futures:
            fut.exception()
        self._futures.clear()


__all__ = ["BlockBatch", "Repo", "CODEC_DAG_PB"]
