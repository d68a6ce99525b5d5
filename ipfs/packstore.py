"""`PackStore`: the embedded node's blocks in a few large append-only pack files plus an index log.

Adapter-internal: imported only by gpumesh.ipfs.repo.

Why packs: one file per 256 KiB block, each fsynced and renamed, cost about a CPU-second of kernel
time per 256 MiB on ext4 (inode allocation, journal, one fsync each); appending to one file and
fsyncing it once costs a small fraction of that.

Layout (REPO/):  packs/NNNNNNNN.pack   block bytes back to back (no framing); a new pack is started
                                       when the current one reaches PACK_MAX
                 index                 INDEX_MAGIC, then fixed-size records:
                                       op (1: put, 2: delete) | sha2-256 digest (32) | pack number
                                       (u32) | offset (u64) | length (u32) | crc32 of the above (u32),
                                       little-endian; later records win
Crash safety (`Txn.commit`, the only way blocks become visible): the blocks' bytes are appended to
the pack and the pack is fdatasync'ed (a background thread already syncs every FLUSH_EVERY bytes
while the import goes on, so little is left by then; a new pack's folder is fsynced too), and only
then are the index records appended and the index fdatasync'ed; the caller acknowledges after that.
So every record on disk points at bytes that were durable before it was written. A crash can leave
(a) pack bytes no record points at (unacknowledged, invisible; space reclaimed by `compact`) and
(b) a torn last index record: on open, records are read up to the first one that is short or whose
crc32 does not match, and the index is truncated there. Reads look the block up in the index and
`pread` it; the caller (Repo.get) re-hashes every block, so bytes corrupted inside a pack are
reported (CorruptBlock), never served. Deletes append a delete record; `compact` (repo gc) rewrites
packs that are mostly dead into a new pack, then writes a fresh index (temp + fsync + rename) and
only then unlinks the old packs.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpumesh.ipfs.errors import IpfsError

INDEX_MAGIC = b"GPMIDX1\n"
PACK_MAX = 64 * 1024 * 1024
FLUSH_EVERY = 4 * 1024 * 1024  # background fdatasync granularity while an add appends
RESERVE = 8 * 1024 * 1024  # disk blocks allocated ahead of the active pack's end
_REC = struct.Struct("<B32sIQI")
REC_SIZE = _REC.size + 4
OP_PUT, OP_DEL = 1, 2


@dataclass(frozen=True, slots=True)
class Loc:
    pack: int
    offset: int
    length: int


def _record(op: int, digest: bytes, loc: Loc) -> bytes:
    body = _REC.pack(op, digest, loc.pack, loc.offset, loc.length)
    return body + struct.pack("<I", zlib.crc32(body))


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _writev_all(fd: int, parts: tuple, offset: int) -> None:
    """pwritev of a block's pieces (no join); a short write (rare) is finished piece by piece."""
    done = os.pwritev(fd, parts, offset)
    for p in parts:
        size = len(p)
        if done < size:
            _write_all(fd, memoryview(p)[done:], offset + done)
        offset += size
        done = max(done - size, 0)


def _keep_size_fallocate():
    """libc fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length), or None where there is none.
    Python has only posix_fallocate, which moves the end of file (and the pack's end is its size)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return lambda fd, offset, length: fn(fd, 1, offset, length)  # 1: FALLOC_FL_KEEP_SIZE


_FALLOCATE = _keep_size_fallocate()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PackStore:
    """Open with `open()` while holding the repo lock; every method is thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs_dir = root / "packs"
        self.index_path = root / "index"
        self._lock = threading.RLock()
        self._index: dict[bytes, Loc] = {}
        self._fds: dict[int, int] = {}
        self._index_fd = -1
        self._index_end = 0
        self._active = 0
        self._active_end = 0
        self._reserved = 0  # active pack: disk blocks reserved up to here (beyond its size)
        self._flusher: ThreadPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def open(self) -> None:
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self._index.clear()
        fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._index_fd = fd
        raw = os.pread(fd, os.fstat(fd).st_size, 0)
        if not raw:
            _write_all(fd, INDEX_MAGIC, 0)
            os.fdatasync(fd)
            fsync_dir(self.root)
            raw = INDEX_MAGIC
        if not raw.startswith(INDEX_MAGIC):
            raise IpfsError(f"{self.index_path} is not a gpumesh block index")
        pos, records = len(INDEX_MAGIC), 0
        while pos + REC_SIZE <= len(raw):
            body = raw[pos : pos + _REC.size]
            (crc,) = struct.unpack_from("<I", raw, pos + _REC.size)
            if zlib.crc32(body) != crc:
                break  # a torn tail (crash mid-append): everything after it is ignored
            op, digest, pack, offset, length = _REC.unpack(body)
            if op == OP_PUT:
                self._index[digest] = Loc(pack, offset, length)
            else:
                self._index.pop(digest, None)
            pos += REC_SIZE
            records += 1
        if pos != len(raw):
            os.ftruncate(fd, pos)  # later appends must not land after the torn bytes
            os.fdatasync(fd)
        self._index_end = pos
        packs = self._pack_numbers()
        self._active = packs[-1] if packs else 0
        # Append after whatever the last pack holds, unreferenced bytes of a crashed add included.
        self._active_end = os.fstat(self._pack_fd(self._active, create=True)).st_size
        self._reserved = 0
        if records > 2 * len(self._index) + 4096:
            self._rewrite_index()

    def close(self) -> None:
        with self._lock:
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
                self._flusher = None
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            if self._index_fd >= 0:
                os.close(self._index_fd)
                self._index_fd = -1

    def _pack_numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in self.packs_dir.glob("*.pack") if p.stem.isdigit())

    def _pack_path(self, n: int) -> Path:
        return self.packs_dir / f"{n:08d}.pack"

    def _pack_fd(self, n: int, create: bool = False) -> int:
        fd = self._fds.get(n)
        if fd is None:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            fd = self._fds[n] = os.open(self._pack_path(n), flags, 0o644)
        return fd

    # -- reads ---------------------------------------------------------------------------------------
    def has(self, digest: bytes) -> bool:
        return digest in self._index

    def locate(self, digest: bytes) -> Loc | None:
        return self._index.get(digest)

    def read(self, digest: bytes) -> bytes | None:
        """The stored bytes, unverified (the caller hashes them), or None if absent."""
        with self._lock:  # compact() may close a pack's fd; the lookup and the read go together
            loc = self._index.get(digest)
            if loc is None:
                return None
            return os.pread(self._pack_fd(loc.pack), loc.length, loc.offset)

    def digests(self) -> list[bytes]:
        with self._lock:
            return list(self._index)

    # -- writes --------------------------------------------------------------------------------------
    def txn(self) -> Txn:
        return Txn(self)

    def _append(self, parts: tuple, size: int) -> Loc:
        """Append one block, given as its pieces, to the active pack (starting a new one when
        full); where it went (offset 0: the first block of a pack)."""
        with self._lock:
            if self._active_end and self._active_end + size > PACK_MAX:
                self._active += 1
                self._active_end = self._reserved = 0
            fd = self._pack_fd(self._active, create=True)
            if self._active_end + size > self._reserved:
                self._reserve(fd, self._active_end + size)
            loc = Loc(self._active, self._active_end, size)
            if len(parts) == 1:
                _write_all(fd, parts[0], loc.offset)
            else:
                _writev_all(fd, parts, loc.offset)
            self._active_end += size
            return loc

    def _reserve(self, fd: int, need: int) -> None:
        """Allocate the pack's next RESERVE bytes of disk ahead of the writes (size unchanged):
        page-cache writes into allocated blocks cost ~25% less CPU than delayed allocation on
        ext4 (measured: 0.061-0.064 vs 0.081-0.083 s per 256 MiB, with the fdatasyncs). Only an
        optimisation: where fallocate is missing or refused, writes allocate as before."""
        start = max(self._active_end, self._reserved)
        end = min(max(need, start + RESERVE), PACK_MAX)
        if _FALLOCATE is not None and end > start:
            _FALLOCATE(fd, start, end - start)
        self._reserved = max(end, need)

    def _flush_async(self, pack: int) -> Future:
        with self._lock:
            return self._background(os.fdatasync, self._pack_fd(pack))

    def _background(self, fn, *args) -> Future:  # noqa: ANN001
        with self._lock:
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="ipfs-packsync")
            return self._flusher.submit(fn, *args)

    def _log(self, records: list[bytes], publish: dict[bytes, Loc | None]) -> None:
        """Append index records durably, then make them visible (None: deleted)."""
        if not records:
            return
        with self._lock:
            _write_all(self._index_fd, b"".join(records), self._index_end)
            os.fdatasync(self._index_fd)
            self._index_end += REC_SIZE * len(records)
            for digest, loc in publish.items():
                if loc is None:
                    self._index.pop(digest, None)
                else:
                    self._index[digest] = loc

    def delete(self, digests: list[bytes]) -> list[bytes]:
        """Delete the blocks present among `digests` (one index append + sync); returns those."""
        with self._lock:
            present = [d for d in dict.fromkeys(digests) if d in self._index]
            self._log([_record(OP_DEL, d, self._index[d]) for d in present], dict.fromkeys(present))
            return present

    def _rewrite_index(self) -> None:
        with self._lock:
            tmp = self.root / "index.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                body = INDEX_MAGIC + b"".join(_record(OP_PUT, d, loc) for d, loc in self._index.items())
                _write_all(fd, body, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            os.replace(tmp, self.index_path)
            fsync_dir(self.root)
            os.close(self._index_fd)
            self._index_fd, self._index_end = fd, len(body)

    def compact(self, min_dead: int | None = None) -> None:
        """Rewrite every pack with at least `min_dead` bytes that no record points at (or with no
        live block at all; default PACK_MAX / 4) into new packs, then drop the old ones. Blocks are copied as stored
        (a corrupt one stays corrupt and is still reported on read). Holds the lock throughout:
        reads wait while gc compacts."""
        min_dead = PACK_MAX // 4 if min_dead is None else min_dead
        with self._lock:
            live: dict[int, int] = {}
            for loc in self._index.values():
                live[loc.pack] = live.get(loc.pack, 0) + loc.length
            victims = []
            for n in self._pack_numbers():
                size = os.stat(self._pack_path(n)).st_size
                if size and (live.get(n, 0) == 0 or size - live.get(n, 0) >= min_dead):
                    victims.append(n)
            if not victims:
                return
            # Copy into fresh packs numbered after every existing one (never into a victim).
            self._active, self._active_end, self._reserved = self._pack_numbers()[-1] + 1, 0, 0
            moved: dict[bytes, Loc] = {}
            touched: set[int] = set()
            for digest, loc in list(self._index.items()):
                if loc.pack in victims:
                    data = os.pread(self._pack_fd(loc.pack), loc.length, loc.offset)
                    new_loc = self._append((data,), len(data))
                    moved[digest] = new_loc
                    touched.add(new_loc.pack)
            for n in touched:
                os.fdatasync(self._pack_fd(n))
            fsync_dir(self.packs_dir)
            self._index.update(moved)
            self._rewrite_index()  # the only index from now on names no victim
            for n in victims:
                fd = self._fds.pop(n, None)
                if fd is not None:
                    os.close(fd)
                self._pack_path(n).unlink()
            fsync_dir(self.packs_dir)


class Txn:
    """The blocks of one `add` (or one `block/put`): `put()` appends to the pack at once and returns;
    `commit()` makes them durable and visible (see the module docstring); nothing is visible
    before. `abort()` forgets them (their bytes stay as unreferenced pack space until compaction).
    `put()` trusts `cid` (the importer has just computed it from these bytes); every later read
    re-hashes the block anyway."""

    def __init__(self, store: PackStore) -> None:
        self._store = store
        self._pending: dict[bytes, Loc] = {}
        self._last_pack: int | None = None
        self._done_packs: list[Future] = []  # background fdatasyncs of the packs this txn filled
        self._dir_sync: Future | None = None
        self._unsynced = 0
        self._flush: Future | None = None

    def put(self, digest: bytes, block: bytes | memoryview) -> None:
        self.put_parts(digest, (block,))

    def put_parts(self, digest: bytes, parts: tuple) -> None:
        """put() of a block given as consecutive pieces (written with one pwritev, never joined)."""
        if digest in self._pending or self._store.has(digest):
            return
        size = sum(len(p) for p in parts)
        loc = self._store._append(parts, size)
        self._pending[digest] = loc
        if loc.pack != self._last_pack:
            if self._last_pack is not None:
                # The previous pack is full and gets no more writes: sync it now, in the
                # background, so commit only syncs the last pack (each fdatasync costs a device
                # flush, ~0.4-1.4 ms here, even for a file with nothing left to write).
                self._done_packs.append(self._store._flush_async(self._last_pack))
            self._last_pack = loc.pack
        if loc.offset == 0:
            # A new pack's name must be durable before commit indexes it: the folder is synced now,
            # in the background (after the pack's creation: the flusher runs one job at a time, in
            # order), so commit only waits for the last such sync.
            self._dir_sync = self._store._background(fsync_dir, self._store.packs_dir)
        self._unsynced += size
        # Start the disk early: sync what was appended so far in the background, one at a time,
        # so that commit() finds little left to write.
        if self._unsynced >= FLUSH_EVERY and (self._flush is None or self._flush.done()):
            self._unsynced = 0
            self._flush = self._store._flush_async(loc.pack)

    def _background_jobs(self) -> list[Future]:
        return [f for f in (self._flush, self._dir_sync, *self._done_packs) if f is not None]

    def commit(self) -> None:
        for f in self._background_jobs():
            f.result()  # raises the error of a failed sync
        if not self._pending:
            return
        store = self._store
        with store._lock:
            fd = store._pack_fd(self._last_pack)
        os.fdatasync(fd)  # outside the lock: reads go on meanwhile (compact never runs during a Txn)
        records = [_record(OP_PUT, d, loc) for d, loc in self._pending.items()]
        store._log(records, dict(self._pending))
        self._pending.clear()

    def abort(self) -> None:
        for f in self._background_jobs():
            f.exception()
        self._pending.clear()


__all__ = ["FLUSH_EVERY", "INDEX_MAGIC", "PACK_MAX", "PackStore", "Txn"]
