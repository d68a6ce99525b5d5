"""The content-store port (`ContentStore`), the verified-read base every adapter shares, and the
in-memory fake `MemoryStore`.

Imported by services and daemons (the port), by tests (the fake) and by gpumesh.ipfs.kubo (the base).
`KuboStore` is re-exported lazily so that importing this module never imports ipfshttpclient.

Never trust the daemon: `cat`, `cat_to` and `get` fetch raw blocks, hash each against its CID and
walk the DAG themselves (gpumesh.ipfs.reader); an adapter that can stream a file's bytes
(`_fetch_range`) gets its leaves that way, each rebuilt and hashed against its CID
(gpumesh.ipfs.ranged). `add_*` compute the CID locally and refuse a daemon that reports another one.
A mismatch raises CidMismatch; no unverified byte is ever returned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from gpumesh.ipfs import ranged, reader
from gpumesh.ipfs.cid import CODEC_RAW, Cid, as_cid
from gpumesh.ipfs.dagpb import T_FILE, T_SYMLINK, decode_node, decode_unixfs
from gpumesh.ipfs.errors import IpfsError, MalformedDag, NotFound
from gpumesh.ipfs.unixfs import FileBuilder, import_file
from gpumesh.ipfs.unixfs_dir import import_directory


@runtime_checkable
class ContentStore(Protocol):
    """What gpumesh needs from IPFS. CIDs are returned as strings (CIDv0 or base32 CIDv1)."""

    def add_bytes(self, data: bytes, *, cid_version: int = 0, pin: bool = True) -> str: ...
    def add_path(self, path: str | os.PathLike, *, cid_version: int = 0, pin: bool = True) -> str: ...
    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def cat_to(self, cid: str, fileobj: BinaryIO) -> int: ...
    def get(self, cid: str, dest: str | os.PathLike) -> Path: ...
    def pin(self, cid: str) -> None: ...
    def unpin(self, cid: str) -> None: ...
    def has(self, cid: str) -> bool: ...
    def id(self) -> dict: ...
    def version(self) -> str: ...


class VerifyingReads:
    """cat / cat_to / get / block_get over `_fetch_many` (and `_fetch_range`, where an adapter sets
    it), which may return anything: all is verified."""

    # (cid, offset, length) -> chunks of that byte range of the file, untrusted; None: blocks only.
    _fetch_range: ranged.FetchRange | None = None

    def _fetch_many(self, cids: list[Cid]) -> Iterable[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _iter_file(self, cid: Cid, offset: int = 0, length: int | None = None,
                   root: reader.Node | None = None) -> Iterator[bytes]:
        if self._fetch_range is None:
            return reader.iter_file(cid, self._fetch_many, offset, length, root)
        return ranged.iter_file_ranged(cid, self._fetch_many, self._fetch_range, offset, length, root)

    def _resolve(self, cid: str | Cid) -> Cid:
        if isinstance(cid, Cid):
            return cid
        return reader.resolve(cid, self._fetch_many)

    def block_get(self, cid: str | Cid) -> bytes:
        c = as_cid(cid)
        return reader.fetch_one(self._fetch_many, c)

    def iter_cat(self, cid: str | Cid, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._iter_file(self._resolve(cid), offset, length)

    def cat(self, cid: str | Cid, offset: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.iter_cat(cid, offset, length))

    def cat_to(self, cid: str | Cid, fileobj: BinaryIO) -> int:
        n = 0
        for chunk in self.iter_cat(cid):
            fileobj.write(chunk)
            n += len(chunk)
        return n

    def get(self, cid: str | Cid, dest: str | os.PathLike) -> Path:
        """Write the file or directory tree `cid` at `dest` (which must not exist yet)."""
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise IpfsError(f"{dest} already exists")
        c = self._resolve(cid)
        self._materialize(reader.decode(c, reader.fetch_one(self._fetch_many, c)), dest, 0)
        return dest

    def _materialize(self, node: reader.Node, dest: Path, depth: int) -> None:
        if depth > reader.MAX_DEPTH:
            raise MalformedDag("directory tree deeper than the depth limit")
        if node.kind == T_FILE:
            tmp = dest.with_name(dest.name + ".part")
            with open(tmp, "wb") as f:
                for chunk in self._iter_file(node.cid, root=node):  # the root is fetched once
                    f.write(chunk)
            os.replace(tmp, dest)
        elif node.kind in reader.DIRECTORY_KINDS:
            dest.mkdir()
            entries = reader.list_node(node, self._fetch_many)
            # The children's root blocks in one lazy batch (adapters fetch it in parallel).
            blocks = iter(self._fetch_many([e.cid for e in entries]))
            for entry in entries:
                block = next(blocks, None)
                if block is None:
                    raise NotFound(f"block {entry.cid} not found")
                self._materialize(reader.decode(entry.cid, block), dest / entry.name, depth + 1)
        elif node.kind == T_SYMLINK:
            target = node.data.decode("utf-8", "replace")
            # Data from the network must not point outside the tree it came with.
            if target.startswith("/") or ".." in Path(target).parts:
                raise IpfsError(f"refusing symlink {dest.name} -> {target!r} (leaves the tree)")
            os.symlink(target, dest)
        else:  # pragma: no cover - decode() only returns the kinds above
            raise IpfsError(f"{node.cid}: cannot materialize UnixFS type {node.kind}")


class MemoryStore(VerifyingReads):
    """In-memory ContentStore for unit tests. Blocks are keyed by multihash, as Kubo keys them.

    It can be told to lie, to prove that readers never trust a store: `tamper(cid, data)` makes it
    serve `data` for that block (in block reads and in the byte ranges it streams, which it builds
    from its blocks without checking them, as a daemon with a bad disk would), `lie_in_cat = True`
    flips a byte in every range it streams, and `lie_about_add = True` makes add report a wrong CID.
    """

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.pins: set[bytes] = set()
        self._lies: dict[bytes, bytes] = {}
        self.lie_about_add = False
        self.lie_in_cat = False
        self.peer_id = "memory"

    # -- lying -------------------------------------------------------------------------------------
    def tamper(self, cid: str | Cid, data: bytes) -> None:
        self._lies[as_cid(cid).digest] = data

    # -- port --------------------------------------------------------------------------------------
    def _put(self, cid: Cid, block: bytes) -> None:
        self.blocks.setdefault(cid.digest, block)

    def _served(self, c: Cid) -> bytes:
        if c.digest in self._lies:
            return self._lies[c.digest]
        if c.digest in self.blocks:
            return self.blocks[c.digest]
        raise NotFound(f"block {c} not found")

    def _fetch_many(self, cids: list[Cid]) -> Iterator[bytes]:
        for c in cids:
            yield self._served(c)

    def _fetch_range(self, cid: Cid, offset: int, length: int) -> Iterator[bytes]:
        pos, end = 0, offset + length
        for chunk in self._served_file(cid):
            a, b = max(offset - pos, 0), min(end - pos, len(chunk))
            pos += len(chunk)
            if a < b:
                piece = chunk[a:b]
                if self.lie_in_cat:
                    piece = bytes([piece[0] ^ 1]) + piece[1:]
                yield piece
            if pos >= end:
                return

    def _served_file(self, cid: Cid) -> Iterator[bytes]:
        """The file's bytes as the (possibly tampered) blocks say, checking nothing."""
        block = self._served(cid)
        if cid.codec == CODEC_RAW:
            yield block
            return
        pb = decode_node(block)
        u = decode_unixfs(pb.data or b"\x08\x02")
        if u.data:
            yield u.data
        for link in pb.links:
            yield from self._served_file(link.cid)

    def _added(self, cid: Cid, pin: bool) -> str:
        if pin:
            self.pins.add(cid.digest)
        if self.lie_about_add:
            return str(Cid.of_block(b"not what you sent"))
        return str(cid)

    def add_bytes(self, data: bytes, *, cid_version: int = 0, pin: bool = True) -> str:
        b = FileBuilder(cid_version=cid_version, sink=self._put)
        b.write(data)
        return self._added(b.finish().cid, pin)

    def add_path(self, path: str | os.PathLike, *, cid_version: int = 0, pin: bool = True) -> str:
        p = Path(path)
        if p.is_dir():
            res = import_directory(p, cid_version, sink=self._put)
        else:
            res = import_file(p, cid_version, sink=self._put)
        return self._added(res.cid, pin)

    def pin(self, cid: str) -> None:
        c = self._resolve(cid)
        for _ in reader.walk_dag(c, self._fetch_many):  # every block must be present and valid
            pass
        self.pins.add(c.digest)

    def unpin(self, cid: str) -> None:
        c = self._resolve(cid)
        if c.digest not in self.pins:
            raise IpfsError(f"{c} is not pinned")
        self.pins.discard(c.digest)

    def has(self, cid: str) -> bool:
        return as_cid(cid).digest in self.blocks

    def id(self) -> dict:
        return {"ID": self.peer_id, "AgentVersion": "gpumesh-memory-store"}

    def version(self) -> str:
        return "memory"


def __getattr__(name: str):
    if name == "KuboStore":
        from gpumesh.ipfs.kubo import KuboStore

        return KuboStore
    raise AttributeError(name)
