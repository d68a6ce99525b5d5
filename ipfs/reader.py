"""Verified reading of UnixFS DAGs: every block is hashed against its CID before it is decoded or used.

Pure (hashlib only): the functions take a block fetcher, so the same code verifies what the Kubo
adapter downloads, what the in-memory fake returns and what the embedded node reads from disk.
Imported by gpumesh.ipfs.store, gpumesh.ipfs.kubo and the embedded node.

A fetcher is `fetch_many(cids) -> iterator of raw block bytes, in the same order`; it may prefetch in
parallel but must stay lazy. Nothing it returns is trusted: a wrong block raises CidMismatch, an
over-large block or a malformed node raises before anything after it is produced, and file sizes
recorded in the DAG (filesize, blocksizes) must agree with the bytes that actually arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gpumesh.ipfs.cid import CODEC_RAW, Cid
from gpumesh.ipfs.dagpb import (
    T_DIRECTORY,
    T_FILE,
    T_HAMT_SHARD,
    T_RAW,
    T_SYMLINK,
    decode_node,
    decode_unixfs,
)
from gpumesh.ipfs.errors import CidMismatch, IpfsError, MalformedDag, NotFound, Unsupported

MAX_BLOCK_SIZE = 2 * 1024 * 1024  # Kubo/bitswap's hard block limit: nothing honest is bigger
MAX_DEPTH = 64

FetchMany = Callable[[list[Cid]], Iterable[bytes]]


class VerifiedBlock(bytes):
    """Block bytes that trusted in-process code (the embedded node's repo) has just hashed against
    `digest`; `verified()` does not hash them a second time. Nothing that arrives over a network is
    ever of this type (it is only built by Repo.get, after its own check)."""

    digest: bytes

    def __new__(cls, data: bytes, digest: bytes) -> VerifiedBlock:
        obj = super().__new__(cls, data)
        obj.digest = digest
        return obj


def verified(cid: Cid, block: bytes) -> bytes:
    """Return `block` if it is the block `cid` names; raise otherwise (never a partial trust)."""
    if len(block) > MAX_BLOCK_SIZE:
        raise CidMismatch(f"block for {cid} is {len(block)} bytes, over the {MAX_BLOCK_SIZE} limit")
    if type(block) is VerifiedBlock and block.digest == cid.digest:
        return block
    if not cid.matches(block):
        raise CidMismatch(f"data served for {cid} does not match its CID")
    return block


def fetch_one(fetch_many: FetchMany, cid: Cid) -> bytes:
    for block in fetch_many([cid]):
        return verified(cid, block)
    raise NotFound(f"block {cid} not found")


@dataclass(frozen=True, slots=True)
class Node:
    """A verified, decoded block: its UnixFS type and what is needed to walk on."""

    cid: Cid
    kind: int  # T_FILE for raw blocks and File/Raw nodes, T_DIRECTORY, T_SYMLINK, ...
    data: bytes  # inline file data, or the symlink target
    links: tuple  # of PBLink
    filesize: int | None
    blocksizes: tuple[int, ...]


def decode(cid: Cid, block: bytes) -> Node:
    verified(cid, block)
    if cid.codec == CODEC_RAW:
        return Node(cid, T_FILE, block, (), len(block), ())
    pb = decode_node(block)
    if pb.data is None:
        raise MalformedDag(f"{cid} is a dag-pb node without UnixFS data")
    u = decode_unixfs(pb.data)
    kind = T_FILE if u.type == T_RAW else u.type
    if kind == T_FILE:
        if pb.links and len(u.blocksizes) != len(pb.links):
            raise MalformedDag(f"{cid}: {len(pb.links)} links but {len(u.blocksizes)} blocksizes")
        inline = len(u.data or b"")
        if u.filesize is not None and u.filesize != inline + sum(u.blocksizes):
            raise MalformedDag(f"{cid}: filesize {u.filesize} != data + blocksizes")
    elif kind == T_HAMT_SHARD:
        raise Unsupported(f"{cid} is a HAMT-sharded directory (not supported by this reader)")
    elif kind not in (T_DIRECTORY, T_SYMLINK):
        raise Unsupported(f"{cid} has UnixFS type {u.type}, which this reader does not handle")
    return Node(cid, kind, u.data or b"", pb.links, u.filesize, u.blocksizes)


def file_size(node: Node) -> int:
    return len(node.data) + sum(node.blocksizes)


def open_file(cid: Cid, fetch_many: FetchMany, offset: int = 0, length: int | None = None) -> Node:
    """The verified root node of the file `cid` (argument checks shared by every file reader)."""
    if offset < 0 or (length is not None and length < 0):
        raise IpfsError("offset and length must be non-negative")
    root = decode(cid, fetch_one(fetch_many, cid))
    if root.kind == T_DIRECTORY:
        raise IpfsError(f"{cid} is a directory")
    if root.kind != T_FILE:
        raise IpfsError(f"{cid} is not a file")
    return root


def iter_file(
    cid: Cid, fetch_many: FetchMany, offset: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """The bytes of the file `cid`, from `offset`, at most `length` of them, fully verified."""
    root = open_file(cid, fetch_many, offset, length)
    end = None if length is None else offset + length
    yield from _file_range(root, fetch_many, offset, end, 0)


def _file_range(node: Node, fetch_many: FetchMany, start: int, end: int | None, depth: int) -> Iterator[bytes]:
    if depth > MAX_DEPTH:
        raise MalformedDag("DAG deeper than the depth limit")
    pos = 0
    if node.data:
        a, b = max(start, 0), len(node.data) if end is None else min(end, len(node.data))
        if a < b:
            yield node.data[a:b]
        pos = len(node.data)
    if not node.links:
        return
    wanted: list[tuple[int, Cid, int]] = []  # (child offset, cid, declared size)
    for link, size in zip(node.links, node.blocksizes, strict=True):
        lo, hi = pos, pos + size
        pos = hi
        if hi <= start or (end is not None and lo >= end):
            continue
        wanted.append((lo, link.cid, size))
    blocks = iter(fetch_many([c for _, c, _ in wanted]))
    for lo, cid, size in wanted:
        block = next(blocks, None)
        if block is None:
            raise NotFound(f"block {cid} not found")
        child = decode(cid, block)
        if child.kind != T_FILE:
            raise MalformedDag(f"{cid}: a file links to a non-file node")
        if file_size(child) != size:
            raise MalformedDag(f"{cid}: holds {file_size(child)} bytes, parent declared {size}")
        yield from _file_range(
            child, fetch_many, max(start - lo, 0), None if end is None else end - lo, depth + 1
        )


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    cid: Cid
    tsize: int | None


def list_directory(cid: Cid, fetch_many: FetchMany) -> list[DirEntry]:
    node = decode(cid, fetch_one(fetch_many, cid))
    if node.kind != T_DIRECTORY:
        raise IpfsError(f"{cid} is not a directory")
    entries = [DirEntry(link.name or "", link.cid, link.tsize) for link in node.links]
    for e in entries:
        if not e.name or "/" in e.name or e.name in (".", "..") or "\0" in e.name:
            raise MalformedDag(f"{cid}: unsafe directory entry name {e.name!r}")
    return entries


def resolve(path: str, fetch_many: FetchMany) -> Cid:
    """`/ipfs/CID/a/b`, `CID/a/b` or `CID` -> the CID it names (walking verified directories)."""
    p = path.strip()
    if p.startswith("/ipfs/"):
        p = p[len("/ipfs/") :]
    parts = [s for s in p.split("/") if s]
    if not parts:
        raise IpfsError(f"{path!r} is not an IPFS path")
    cid = Cid.parse(parts[0])
    rest = parts[1:]
    for name in rest:
        match = [e for e in list_directory(cid, fetch_many) if e.name == name]
        if not match:
            raise NotFound(f"no link named {name!r} under {cid}")
        cid = match[0].cid
    return cid


def walk_dag(cid: Cid, fetch_many: FetchMany) -> Iterator[tuple[Cid, bytes]]:
    """Every block of the DAG under `cid` (depth first, each verified), for pinning and copying."""
    stack: list[tuple[Cid, int]] = [(cid, 0)]
    seen: set[Cid] = set()
    while stack:
        batch = []
        while stack and len(batch) < 64:
            c, d = stack.pop()
            if c not in seen:
                seen.add(c)
                batch.append((c, d))
        blocks = iter(fetch_many([c for c, _ in batch]))
        for c, d in batch:
            block = next(blocks, None)
            if block is None:
                raise NotFound(f"block {c} not found")
            verified(c, block)
            yield c, block
            if c.codec != CODEC_RAW:
                if d >= MAX_DEPTH:
                    raise MalformedDag("DAG deeper than the depth limit")
                pb = decode_node(block)
                stack.extend((link.cid, d + 1) for link in reversed(pb.links))
