"""The embedded node's repository on disk: a crash-safe, self-verifying block store and a pin set.

Adapter-internal: imported only by gpumesh.ipfs.rpc and gpumesh.ipfs.node.

Layout (REPO/):  version                "gpumesh-2": blocks in packs (gpumesh.ipfs.packstore)
                 packs/NNNNNNNN.pack    block bytes, appended
                 index                  digest -> (pack, offset, length) records, crc-checked
                 pins.json              {"recursive": [CID, ...]}
                 identity.json          the node's stable peer ID
                 api                    the RPC multiaddr while the node runs (as Kubo writes it)
                 repo.lock              held (flock) by the running node
The block store is opened by `lock()` (only the node that holds the lock reads or repairs the
index). A repo of the earlier format (gpumesh-1: one file per block, blocks/XY/<KEY>.data, Kubo's
flatfs naming) is migrated by `lock()`: every block file is appended to a pack as it is (a corrupt
one stays corrupt and is reported when read), committed, and only then is blocks/ removed; a crash
during the migration leaves blocks/ in place and the next start finishes it. `add` writes its
blocks through a `BlockBatch` (a pack transaction: appended at once, durable and visible only at
`commit()`, before `add` answers). Every read re-hashes the block; a block that no longer matches
its CID raises CorruptBlock and is never served.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid, b32decode, b58encode
from gpumesh.ipfs.errors import CorruptBlock, IpfsError, NotFound
from gpumesh.ipfs.packstore import PackStore, Txn, fsync_dir
from gpumesh.ipfs.reader import VerifiedBlock

REPO_VERSION = "gpumesh-2"


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


def _not_found(cid: Cid) -> NotFound:
    return NotFound(f"block was not found locally (offline): {cid}")


class Repo:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._store = PackStore(self.path)
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
        """Take the repo (flock) and open its block store, migrating a gpumesh-1 repo."""
        fd = os.open(self.path / "repo.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise IpfsError(f"repo {self.path} is locked by another running node") from None
        self._lock_fd = fd
        try:
            version_file = self.path / "version"
            if version_file.exists():
                found = version_file.read_text().strip()
                if found != REPO_VERSION:
                    raise IpfsError(f"repo {self.path} has format {found!r}; this node reads {REPO_VERSION!r}")
            self._store.open()
            if (self.path / "blocks").is_dir():
                self._migrate_block_files(self.path / "blocks")
            if not version_file.exists():
                _atomic_write(version_file, (REPO_VERSION + "\n").encode())
                fsync_dir(self.path)
        except BaseException:
            self.unlock()
            raise

    def unlock(self) -> None:
        self._store.close()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _migrate_block_files(self, blocks: Path) -> None:
        txn = self._store.txn()
        for f in sorted(blocks.glob("*/*.data")):
            mh = b32decode(f.name[: -len(".data")].lower())
            if len(mh) == 34 and mh[:2] == b"\x12\x20":  # sha2-256: the only hash stored
                txn.put(mh[2:], f.read_bytes())
        txn.commit()  # skips blocks an interrupted migration already committed
        shutil.rmtree(blocks)
        fsync_dir(self.path)

    def batch(self) -> BlockBatch:
        return BlockBatch(self._store.txn())

    # -- blocks -------------------------------------------------------------------------------------
    def has(self, cid: Cid) -> bool:
        return self._store.has(cid.digest)

    def put(self, cid: Cid, block: bytes) -> bool:
        """Store a block (verified first), durably. Returns False if it was already there."""
        if not cid.matches(block):
            raise IpfsError(f"refusing to store a block that does not match {cid}")
        if self._store.has(cid.digest):
            return False
        txn = self._store.txn()
        txn.put(cid.digest, block)
        txn.commit()
        return True

    def get(self, cid: Cid) -> VerifiedBlock:
        """The block, re-hashed now; marked as verified so the DAG reader does not hash it again."""
        block = self._store.read(cid.digest)
        if block is None:
            raise _not_found(cid)
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"block {cid} on disk is corrupt (its content no longer matches its hash)")
        return VerifiedBlock(block, cid.digest)

    def size(self, cid: Cid) -> int:
        loc = self._store.locate(cid.digest)
        if loc is None:
            raise _not_found(cid)
        return loc.length

    def locate(self, cid: Cid) -> tuple[Path, int, int]:
        """(pack file, offset, length) of a stored block: for diagnostics and tests."""
        loc = self._store.locate(cid.digest)
        if loc is None:
            raise _not_found(cid)
        return self._store._pack_path(loc.pack), loc.offset, loc.length

    def delete(self, cid: Cid) -> None:
        if not self._store.delete([cid.digest]):
            raise _not_found(cid)

    def gc(self, live: set[bytes]) -> list[Cid]:
        """Delete every block whose digest is not in `live` (one index append), then compact the
        packs that became mostly dead. The caller must keep adds out meanwhile (rpc's write_lock)."""
        dead = [d for d in self._store.digests() if d not in live]
        removed = self._store.delete(dead)
        self._store.compact()
        return [Cid(1, CODEC_RAW, d) for d in removed]

    def all_keys(self) -> Iterator[Cid]:
        """Every stored block as a CIDv1 (raw codec: Kubo keys by multihash only, so the codec is a
        guess; gc and listings only need the multihash)."""
        for d in self._store.digests():
            yield Cid(1, CODEC_RAW, d)

    # -- pins ---------------------------------------------------------------------------------------
    @property
    def pins(self) -> set[Cid]:
        with self._lock:
            return set(self._pins)

    def _save_pins(self) -> None:
        data = json.dumps({"recursive": sorted(str(c) for c in self._pins)}).encode()
        _atomic_write(self.path / "pins.json", data)
        fsync_dir(self.path)

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
    """The blocks of one `add`: `put()` appends each to the pack at once (the importer's sink);
    `commit()` makes them all durable, then indexes them (see gpumesh.ipfs.packstore), and only
    then may the caller pin or acknowledge them. Blocks of an aborted or crashed add are never
    indexed: invisible, their space reclaimed by repo gc's compaction."""

    def __init__(self, txn: Txn) -> None:
        self._txn = txn

    def put(self, cid: Cid, block: bytes) -> None:
        self._txn.put(cid.digest, block)

    def put_parts(self, cid: Cid, parts: tuple) -> None:
        """The importer's PartsSink: the block's pieces appended with one pwritev, no join."""
        self._txn.put_parts(cid.digest, parts)

    def commit(self) -> None:
        self._txn.commit()

    def abort(self) -> None:
        self._txn.abort()


__all__ = ["REPO_VERSION", "BlockBatch", "Repo", "CODEC_DAG_PB"]
