"""The UnixFS importer: byte streams, files and directories to Kubo-identical CIDs and blocks.

Pure (hashlib, os for directory walks). Used by the CLI (`--only-hash`), by the stores (to check the
CID a daemon returns) and by the embedded node's `add`.

Rules, as Kubo's defaults (boxo importer/balanced + helpers, go-unixfs, go-merkledag):
- fixed-size chunker, CHUNK_SIZE = 256 KiB; an empty input is one empty leaf;
- leaves: cid_version 0 -> dag-pb node `Data{Type: File, Data: chunk, filesize: len}`, CIDv0;
  cid_version 1 -> raw blocks (codec raw, CIDv1) unless raw_leaves=False (then dag-pb, CIDv1);
- balanced layout, MAX_LINKS = 174 per node, every leaf at the same depth, subtrees filled left to
  right; one chunk is its own root; a parent is
  `PBNode{Links: [{Hash, Name: "", Tsize}...], Data: Data{Type: File, filesize, blocksizes}}`;
- Tsize (cumulative size) = block length + the children's Tsizes; raw leaves: the data length;
- directories: `Data{Type: Directory}`, links sorted by name bytes with Tsize of each child;
  symlinks: `Data{Type: Symlink, Data: target}`. Directories whose links would pass Kubo's
  HAMT threshold (256 KiB estimated) are refused (Unsupported) instead of getting a wrong CID.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid, encode_varint
from gpumesh.ipfs.dagpb import (
    T_DIRECTORY,
    T_FILE,
    T_SYMLINK,
    PBLink,
    UnixfsData,
    encode_node,
    encode_unixfs,
)
from gpumesh.ipfs.errors import IpfsError, Unsupported

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
HAMT_THRESHOLD = 256 * 1024  # boxo: HAMTShardingSize, estimated as sum(len(name) + len(cid bytes))
_READ_SIZE = 4 * CHUNK_SIZE

# Called with (cid, block bytes) for every block, children before parents, root last.
BlockSink = Callable[[Cid, bytes], None]


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
class Entry:
    """One added path, as `ipfs add` reports it (files first in walk order, then directories)."""

    name: str
    result: ImportResult


@dataclass(frozen=True, slots=True)
class _Child:
    cid: Cid
    filesize: int
    tsize: int


def _leaf_dagpb_frame(n: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) around a chunk of length n in a dag-pb File leaf, so the chunk is never copied
    just to be hashed."""
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
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
    ) -> None:
        if cid_version not in (0, 1):
            raise IpfsError(f"unknown CID version {cid_version}")
        self.cid_version = cid_version
        # Kubo: CIDv1 implies raw leaves; --raw-leaves with CIDv0 keeps CIDv0 for the dag-pb
        # parents while the raw leaves are CIDv1 (a raw block has no CIDv0).
        self.raw_leaves = (cid_version == 1) if raw_leaves is None else raw_leaves
        self._sink = sink
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
    def _emit(self, cid: Cid, block: bytes) -> None:
        self._blocks += 1
        if self._sink is not None:
            self._sink(cid, block)

    def _leaf(self, chunk: bytes | memoryview) -> None:
        n = len(chunk)
        self._size += n
        if self.raw_leaves:
            cid = Cid(1, CODEC_RAW, hashlib.sha256(chunk).digest())
            child = _Child(cid, n, n)
            if self._sink is not None:
                self._emit(cid, bytes(chunk))
            else:
                self._blocks += 1
        else:
            prefix, suffix = _leaf_dagpb_frame(n)
            h = hashlib.sha256(prefix)
            h.update(chunk)
            h.update(suffix)
            cid = Cid(self.cid_version, CODEC_DAG_PB, h.digest())
            blen = len(prefix) + n + len(suffix)
            child = _Child(cid, n, blen)
            if self._sink is not None:
                self._emit(cid, b"".join((prefix, chunk, suffix)))
            else:
                self._blocks += 1
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
        self._emit(cid, block)
        return _Child(cid, filesize, len(block) + sum(c.tsize for c in children))


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


def directory_node(
    entries: list[tuple[str, Cid, int]], cid_version: int = 0
) -> tuple[Cid, bytes, int]:
    """A basic UnixFS directory over (name, cid, tsize) entries: (cid, block, tsize)."""
    names = [name for name, _, _ in entries]
    if len(set(names)) != len(names):
        raise IpfsError("duplicate names in a directory")
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise IpfsError(f"invalid directory entry name {name!r}")
    estimate = sum(len(name.encode("utf-8")) + len(cid.to_bytes()) for name, cid, _ in entries)
    if estimate > HAMT_THRESHOLD:
        raise Unsupported(
            f"directory with {len(entries)} entries needs a HAMT-sharded node, which this importer "
            "does not build"
        )
    ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    block = encode_node(
        [PBLink(cid, name, tsize) for name, cid, tsize in ordered], encode_unixfs(UnixfsData(T_DIRECTORY))
    )
    cid = Cid(cid_version, CODEC_DAG_PB, hashlib.sha256(block).digest())
    return cid, block, len(block) + sum(t for _, _, t in ordered)


def symlink_node(target: str, cid_version: int = 0) -> tuple[Cid, bytes]:
    block = encode_node([], encode_unixfs(UnixfsData(T_SYMLINK, target.encode("utf-8"))))
    return Cid(cid_version, CODEC_DAG_PB, hashlib.sha256(block).digest()), block


class TreeBuilder:
    """Assembles files, symlinks and directories announced by path ("top/sub/file") into UnixFS
    directories, in the order Kubo reports them: each file or symlink as it completes, then every
    directory, deepest first (post-order, children by name), top-level items last.

    Shared by import_directory, the Kubo adapter (which checks the daemon's CID against it while
    uploading) and the embedded node's `add`, so the three can never disagree on a directory.
    With wrap=True every top-level item goes into one unnamed root directory (wrap-with-directory).
    """

    def __init__(
        self,
        *,
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        sink: BlockSink | None = None,
        wrap: bool = False,
    ) -> None:
        self.cid_version = cid_version
        self.raw_leaves = raw_leaves
        self._sink = sink
        self._wrap = wrap
        self._dirs: dict[str, dict[str, ImportResult]] = {"": {}}
        self._order: list[str] = []  # top-level names in arrival order
        self.entries: list[Entry] = []

    def _parent(self, path: str) -> tuple[dict[str, ImportResult], str]:
        path = path.strip("/")
        if not path or any(p in ("", ".", "..") for p in path.split("/")):
            raise IpfsError(f"invalid path {path!r} in a directory upload")
        parent, _, name = path.rpartition("/")
        if parent not in self._dirs:
            raise IpfsError(f"{path!r} arrived before its directory {parent!r}")
        if name in self._dirs[parent] or path in self._dirs:
            raise IpfsError(f"duplicate path {path!r}")
        if not parent:
            self._order.append(name)
        return self._dirs[parent], name

    def add_dir(self, path: str) -> None:
        self._parent(path)
        self._dirs[path.strip("/")] = {}

    def file(self) -> FileBuilder:
        return FileBuilder(cid_version=self.cid_version, raw_leaves=self.raw_leaves, sink=self._sink)

    def add_file(self, path: str, result: ImportResult) -> None:
        siblings, name = self._parent(path)
        siblings[name] = result
        self.entries.append(Entry(path.strip("/"), result))

    def add_symlink(self, path: str, target: str) -> None:
        cid, block = symlink_node(target, self.cid_version)
        if self._sink is not None:
            self._sink(cid, block)
        self.add_file(path, ImportResult(cid, 0, len(block), 1))

    def finish(self) -> list[Entry]:
        """Build every directory; return all entries in Kubo's order (the root is the last one)."""
        def build(path: str) -> ImportResult:
            children = self._dirs[path]
            prefix = path + "/" if path else ""
            for name in sorted(
                (n for n in self._dirs if n.startswith(prefix) and "/" not in n[len(prefix):] and n != path),
                key=lambda n: n.encode("utf-8"),
            ):
                children[name[len(prefix):]] = build(name)
            cid, block, tsize = directory_node(
                [(n, r.cid, r.tsize) for n, r in children.items()], self.cid_version
            )
            if self._sink is not None:
                self._sink(cid, block)
            res = ImportResult(cid, 0, tsize, 1 + sum(r.blocks for r in children.values()))
            if path:
                self.entries.append(Entry(path, res))
            return res

        top_dirs = [n for n in self._order if n in self._dirs]
        if self._wrap:
            root = build("")
            self.entries.append(Entry("", root))
        else:
            for name in top_dirs:
                build(name)
        return self.entries


def walk_tree(path: str | os.PathLike, *, hidden: bool = False) -> Iterator[tuple[str, str, Path]]:
    """(relative path, kind, absolute path) of a directory tree in upload order: a directory before
    its entries, entries by name bytes; kind is "dir", "file" or "symlink". Dotfiles are skipped
    unless hidden=True, as Kubo's CLI does."""
    root = Path(path)
    if not root.is_dir():
        raise IpfsError(f"{root} is not a directory")
    base = root.name or root.resolve().name

    def walk(d: Path, rel: str) -> Iterator[tuple[str, str, Path]]:
        yield rel, "dir", d
        for name in sorted(os.listdir(d), key=lambda s: s.encode("utf-8", "surrogateescape")):
            if not hidden and name.startswith("."):
                continue
            p = d / name
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                yield f"{rel}/{name}", "symlink", p
            elif stat.S_ISDIR(mode):
                yield from walk(p, f"{rel}/{name}")
            elif stat.S_ISREG(mode):
                yield f"{rel}/{name}", "file", p
            else:
                raise IpfsError(f"unrecognized file type for {p}")

    yield from walk(root, base)


def import_directory(
    path: str | os.PathLike,
    cid_version: int = 0,
    *,
    raw_leaves: bool | None = None,
    hidden: bool = False,
    sink: BlockSink | None = None,
    entries: list[Entry] | None = None,
) -> ImportResult:
    """`ipfs add -r PATH`: files streamed, symlinks stored as UnixFS symlinks. `entries`, if given,
    receives every added path in Kubo's output order."""
    tree = TreeBuilder(cid_version=cid_version, raw_leaves=raw_leaves, sink=sink)
    for rel, kind, p in walk_tree(path, hidden=hidden):
        if kind == "dir":
            tree.add_dir(rel)
        elif kind == "symlink":
            tree.add_symlink(rel, os.readlink(p))
        else:
            tree.add_file(rel, import_file(p, cid_version, raw_leaves=raw_leaves, sink=sink))
    out = tree.finish()
    if entries is not None:
        entries.extend(out)
    return out[-1].result
