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

from gpumesh.ipfs import hamt
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

DIRECTORY_KINDS = (T_DIRECTORY, T_HAMT_SHARD)  # a flat directory, or the root of a sharded one
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
    kind: int  # T_FILE for raw blocks and File/Raw nodes, T_DIRECTORY, T_HAMT_SHARD, T_SYMLINK
    data: bytes  # inline file data, the symlink target, or a HAMT shard's bitfield
    links: tuple  # of PBLink (for a HAMT shard: its raw shard links, not the entries)
    filesize: int | None
    blocksizes: tuple[int, ...]
    fanout: int | None = None  # HAMT shards only
    shard: tuple | None = None  # HAMT shards only: (bits per level, [hamt.ShardLink]), checked by decode


def decode(cid: Cid, block: bytes) -> Node:
    verified(cid, block)
    if cid.codec == CODEC_RAW:
        return Node(cid, T_FILE, block, (), len(block), ())
    pb = decode_node(block)
    if pb.data is None:
        raise MalformedDag(f"{cid} is a dag-pb node without UnixFS data")
    u = decode_unixfs(pb.data)
    kind = T_FILE if u.type == T_RAW else u.type
    shard = None
    if kind == T_FILE:
        if pb.links and len(u.blocksizes) != len(pb.links):
            raise MalformedDag(f"{cid}: {len(pb.links)} links but {len(u.blocksizes)} blocksizes")
        inline = len(u.data or b"")
        if u.filesize is not None and u.filesize != inline + sum(u.blocksizes):
            raise MalformedDag(f"{cid}: filesize {u.filesize} != data + blocksizes")
    elif kind == T_HAMT_SHARD:
        shard = hamt.shard_links(cid, pb.links, u.data or b"", u.fanout, u.hash_type)  # layout checked here
    elif kind not in (T_DIRECTORY, T_SYMLINK):
        raise Unsupported(f"{cid} has UnixFS type {u.type}, which this reader does not handle")
    return Node(cid, kind, u.data or b"", pb.links, u.filesize, u.blocksizes, u.fanout, shard)


def file_size(node: Node) -> int:
    return len(node.data) + sum(node.blocksizes)


def open_file(cid: Cid, fetch_many: FetchMany, offset: int = 0, length: int | None = None,
              root: Node | None = None) -> Node:
    """The verified root node of the file `cid` (argument checks shared by every file reader);
    `root`: the caller already fetched and decoded it."""
    if offset < 0 or (length is not None and length < 0):
        raise IpfsError("offset and length must be non-negative")
    if root is None:
        root = decode(cid, fetch_one(fetch_many, cid))
    if root.kind in DIRECTORY_KINDS:
        raise IpfsError(f"{cid} is a directory")
    if root.kind != T_FILE:
        raise IpfsError(f"{cid} is not a file")
    return root


def iter_file(
    cid: Cid, fetch_many: FetchMany, offset: int = 0, length: int | None = None, root: Node | None = None
) -> Iterator[bytes]:
    """The bytes of the file `cid`, from `offset`, at most `length` of them, fully verified
    (`root`: its decoded root node, when the caller has it)."""
    root = open_file(cid, fetch_many, offset, length, root)
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
    """The entries of a flat or HAMT-sharded directory, each once (a HAMT in slot order: every
    shard fetched and verified, each entry checked to sit on its own hash path)."""
    return list_node(decode(cid, fetch_one(fetch_many, cid)), fetch_many)


def list_node(node: Node, fetch_many: FetchMany) -> list[DirEntry]:
    if node.kind == T_HAMT_SHARD:
        entries = _list_shard(node, fetch_many, (), 0)
        if len({e.name for e in entries}) != len(entries):
            raise MalformedDag(f"{node.cid}: a name appears twice in the sharded directory")
        return entries
    if node.kind != T_DIRECTORY:
        raise IpfsError(f"{node.cid} is not a directory")
    entries = [DirEntry(link.name or "", link.cid, link.tsize) for link in node.links]
    for e in entries:
        hamt.check_entry_name(node.cid, e.name)
    return entries


def _shard_child(cid: Cid, block: bytes | None, parent: Node) -> Node:
    if block is None:
        raise NotFound(f"block {cid} not found")
    child = decode(cid, block)
    if child.kind != T_HAMT_SHARD or child.fanout != parent.fanout:
        raise MalformedDag(f"{cid}: a HAMT shard links to a node that is not a shard of its fanout")
    return child


def _list_shard(node: Node, fetch_many: FetchMany, path: tuple[int, ...], depth: int) -> list[DirEntry]:
    if depth > MAX_DEPTH:
        raise MalformedDag("DAG deeper than the depth limit")
    width, links = node.shard
    subs = [link for link in links if link.name is None]
    children = iter(fetch_many([link.cid for link in subs]))  # one batch per shard, prefetched
    out: list[DirEntry] = []
    for link in links:
        if link.name is None:
            child = _shard_child(link.cid, next(children, None), node)
            out.extend(_list_shard(child, fetch_many, (*path, link.slot), depth + 1))
        else:
            hamt.check_entry_name(node.cid, link.name)
            hamt.check_value(node.cid, link.name, (*path, link.slot), width)
            out.append(DirEntry(link.name, link.cid, link.tsize))
    return out


def lookup(node: Node, name: str, fetch_many: FetchMany) -> DirEntry | None:
    """The entry `name` of a directory node; in a HAMT only the shards on its hash path are read."""
    if node.kind == T_DIRECTORY:
        return next((e for e in list_node(node, fetch_many) if e.name == name), None)
    if node.kind != T_HAMT_SHARD:
        raise IpfsError(f"{node.cid} is not a directory")
    h = hamt.key_hash(name)
    for depth in range(MAX_DEPTH):
        width, links = node.shard
        s = hamt.slot(h, depth, width)
        link = next((lk for lk in links if lk.slot == s), None)
        if link is None:
            return None
        if link.name is not None:
            return DirEntry(name, link.cid, link.tsize) if link.name == name else None
        node = _shard_child(link.cid, fetch_one(fetch_many, link.cid), node)
    raise MalformedDag("DAG deeper than the depth limit")


def resolve(path: str, fetch_many: FetchMany) -> Cid:
    """`/ipfs/CID/a/b`, `CID/a/b` or `CID` -> the CID it names (walking verified directories)."""
    p = path.strip()
    if p.startswith("/ipfs/"):
        p = p[len("/ipfs/") :]
    parts = [s for s in p.split("/") if s]
    if not parts:
        raise IpfsError(f"{path!r} is not an IPFS path")
    cid = Cid.parse(parts[0])
    for name in parts[1:]:
        entry = lookup(decode(cid, fetch_one(fetch_many, cid)), name, fetch_many)
        if entry is None:
            raise NotFound(f"no link named {name!r} under {cid}")
        cid = entry.cid
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
