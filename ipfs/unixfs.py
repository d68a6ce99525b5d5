"""The UnixFS importer: byte streams and files to Kubo-identical CIDs and blocks (directories, symlinks
and whole trees: gpumesh.ipfs.unixfs_dir, whose names are also reachable from here).

Pure (hashlib, os). Used by the CLI (`--only-hash`), by the stores (to check the CID a daemon
returns), by the embedded node's `add` and by the ranged reader (leaf_frame).

Rules, as Kubo's defaults (boxo importer/balanced + helpers, go-unixfs, go-merkledag):
- fixed-size chunker, CHUNK_SIZE = 256 KiB; an empty input is one empty leaf;
- leaves: cid_version 0 -> dag-pb node `Data{Type: File, Data: chunk, filesize: len}`, CIDv0;
  cid_version 1 -> raw blocks (codec raw, CIDv1) unless raw_leaves=False (then dag-pb, CIDv1);
- balanced layout, MAX_LINKS = 174 per node, every leaf at the same depth, subtrees filled left to
  right; one chunk is its own root; a parent is
  `PBNode{Links: [{Hash, Name: "", Tsize}...], Data: Data{Type: File, filesize, blocksizes}}`;
- Tsize (cumulative size) = block length + the children's Tsizes; raw leaves: the data length;
- directories and symlinks: see gpumesh.ipfs.unixfs_dir.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid, encode_varint
from gpumesh.ipfs.dagpb import T_FILE, PBLink, UnixfsData, encode_node, encode_unixfs
from gpumesh.ipfs.errors import IpfsError

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
_READ_SIZE = 4 * CHUNK_SIZE

# Called with (cid, block bytes) for every block, children before parents, root last.
BlockSink = Callable[[Cid, bytes], None]
# The same, with the block as consecutive pieces (leaf frame, chunk view, frame tail) that are valid
# only during the call: a sink that writes them at once (pwritev) never copies a block.
PartsSink = Callable[[Cid, tuple], None]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import produced: the root CID, the UnixFS size and the cumulative DAG size (Tsize)."""

    cid: Cid
    size: int
    tsize: int
    blocks: int = 1

    def __str__(self) -> str:
        return str(self.cid)


@dataclass(frozen=True, slots=True)
class _Child:
    cid: Cid
    filesize: int
    tsize: int


@functools.lru_cache(maxsize=64)  # almost every leaf is CHUNK_SIZE long: encoded once, not per leaf
def leaf_frame(n: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) around a chunk of length n in a dag-pb File leaf, as Kubo encodes it, so the
    chunk is never copied just to be hashed (and a reader can rebuild a leaf from its bytes)."""
    # UnixFS Data: 08 02 | 12 len(chunk) chunk | 18 filesize. An empty chunk has no Data field (Go
    # leaves the nil slice unset), but still a filesize of 0.
    head = b"\x08\x02" + (b"\x12" + encode_varint(n) if n else b"")
    tail = b"\x18" + encode_varint(n)
    inner_len = len(head) + n + len(tail)
    return b"\x0a" + encode_varint(inner_len) + head, tail


class FileBuilder:
    """Push-style importer of one file: `write()` bytes as they arrive, `finish()` for the root.

    Memory stays bounded by one chunk plus MAX_LINKS links per tree level, whatever the file size.
    """

    def __init__(
        self,
        *,
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        sink: BlockSink | None = None,
        parts_sink: PartsSink | None = None,
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
    ) -> None:
        if cid_version not in (0, 1):
            raise IpfsError(f"unknown CID version {cid_version}")
        self.cid_version = cid_version
        # Kubo: CIDv1 implies raw leaves; --raw-leaves with CIDv0 keeps CIDv0 for the dag-pb
        # parents while the raw leaves are CIDv1 (a raw block has no CIDv0).
        self.raw_leaves = (cid_version == 1) if raw_leaves is None else raw_leaves
        if sink is not None and parts_sink is None:
            parts_sink = _joining(sink)
        self._sink = parts_sink
        self._chunk = chunk_size
        self._max_links = max_links
        self._buf = bytearray()
        self._levels: list[list[_Child]] = [[]]
        self._size = 0
        self._blocks = 0
        self._done = False

    # -- input ----------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise IpfsError("write after finish")
        mv = memoryview(data).cast("B")
        ch = self._chunk
        if self._buf:
            need = ch - len(self._buf)
            self._buf += mv[:need]
            mv = mv[need:]
            if len(self._buf) == ch:
                self._leaf(bytes(self._buf))
                self._buf = bytearray()
        while len(mv) >= ch:
            self._leaf(mv[:ch])
            mv = mv[ch:]
        if len(mv):
            self._buf += mv

    def finish(self) -> ImportResult:
        if self._done:
            raise IpfsError("finish called twice")
        if self._buf or self._size == 0:
            self._leaf(bytes(self._buf))
            self._buf = bytearray()
        self._done = True
        levels = self._levels
        top = len(levels) - 1
        while not levels[top]:
            top -= 1
        # Close every partial node below the top so all leaves end at the same depth (balanced).
        for k in range(top):
            if levels[k]:
                levels[k + 1].append(self._parent(levels[k]))
                levels[k] = []
        if len(levels[top]) > 1:
            root = self._parent(levels[top])
        else:
            root = levels[top][0]
        return ImportResult(root.cid, root.filesize, root.tsize, self._blocks)

    # -- tree -----------------------------------------------------------------------------------
    def _emit(self, cid: Cid, parts: tuple) -> None:
        self._blocks += 1
        if self._sink is not None:
            self._sink(cid, parts)

    def _leaf(self, chunk: bytes | memoryview) -> None:
        n = len(chunk)
        self._size += n
        if self.raw_leaves:
            cid = Cid(1, CODEC_RAW, hashlib.sha256(chunk).digest())
            child = _Child(cid, n, n)
            self._emit(cid, (chunk,))
        else:
            prefix, suffix = leaf_frame(n)
            h = hashlib.sha256(prefix)
            h.update(chunk)
            h.update(suffix)
            cid = Cid(self.cid_version, CODEC_DAG_PB, h.digest())
            blen = len(prefix) + n + len(suffix)
            child = _Child(cid, n, blen)
            self._emit(cid, (prefix, chunk, suffix))
        self._push(0, child)

    def _push(self, level: int, child: _Child) -> None:
        levels = self._levels
        levels[level].append(child)
        # A full node is final whatever comes next: collapse it at once (bounded memory).
        if len(levels[level]) == self._max_links:
            parent = self._parent(levels[level])
            levels[level] = []
            if len(levels) == level + 1:
                levels.append([])
            self._push(level + 1, parent)

    def _parent(self, children: list[_Child]) -> _Child:
        filesize = sum(c.filesize for c in children)
        data = encode_unixfs(UnixfsData(T_FILE, None, filesize, tuple(c.filesize for c in children)))
        block = encode_node([PBLink(c.cid, "", c.tsize) for c in children], data)
        cid = Cid(self.cid_version, CODEC_DAG_PB, hashlib.sha256(block).digest())
        self._emit(cid, (block,))
        return _Child(cid, filesize, len(block) + sum(c.tsize for c in children))


def _joining(sink: BlockSink) -> PartsSink:
    """A BlockSink behind the parts interface: each block joined into its own bytes (the pieces
    may be views of a caller's buffer that is reused after the call)."""
    def put(cid: Cid, parts: tuple) -> None:
        sink(cid, b"".join(parts) if len(parts) > 1 else bytes(parts[0]))

    return put


def cid_of_bytes(data: bytes, cid_version: int = 0, raw_leaves: bool | None = None) -> str:
    """The CID `ipfs add --only-hash` prints for a file holding `data`."""
    b = FileBuilder(cid_version=cid_version, raw_leaves=raw_leaves)
    b.write(data)
    return str(b.finish().cid)


def import_stream(
    stream: BinaryIO,
    *,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    sink: BlockSink | None = None,
) -> ImportResult:
    b = FileBuilder(cid_version=cid_version, raw_leaves=raw_leaves, sink=sink)
    buf = bytearray(_READ_SIZE)
    mv = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buf)
            if not n:
                break
            b.write(mv[:n])
        else:
            chunk = stream.read(_READ_SIZE)
            if not chunk:
                break
            b.write(chunk)
    return b.finish()


def import_file(
    src: str | os.PathLike | BinaryIO,
    cid_version: int = 0,
    *,
    raw_leaves: bool | None = None,
    sink: BlockSink | None = None,
) -> ImportResult:
    """Import one file (a path or a binary file object), streamed in chunks."""
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return import_stream(f, cid_version=cid_version, raw_leaves=raw_leaves, sink=sink)
    return import_stream(src, cid_version=cid_version, raw_leaves=raw_leaves, sink=sink)


# The directory half of the importer lives in gpumesh.ipfs.unixfs_dir; these names stay importable
# from here (lazily: unixfs_dir imports this module).
_DIR_NAMES = frozenset({"Entry", "HAMT_THRESHOLD", "TreeBuilder", "build_directory", "import_directory",
                        "symlink_node", "walk_tree"})


def __getattr__(name: str):
    if name in _DIR_NAMES:
        from gpumesh.ipfs import unixfs_dir

        return getattr(unixfs_dir, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
