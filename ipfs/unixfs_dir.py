"""The UnixFS importer's directory half: directory and symlink nodes, `TreeBuilder` (paths announced
in upload order -> Kubo's directories and output order), directory walks and `import_directory`.

Pure (hashlib, os for directory walks). Used by the CLI, the stores, the embedded node's `add`;
also reachable as gpumesh.ipfs.unixfs.<name>.

Rules, as Kubo's defaults (boxo, go-unixfs): a directory is `Data{Type: Directory}` with its links
sorted by name bytes, each with its child's Tsize; a symlink is `Data{Type: Symlink, Data: target}`.
A directory whose links pass Kubo's HAMT threshold (estimate = sum of len(name) + len(binary CID)
> 256 KiB, boxo `HAMTShardingSize`, "links" estimation) is written as a HAMT (gpumesh.ipfs.hamt).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpumesh.ipfs import hamt
from gpumesh.ipfs.cid import CODEC_DAG_PB, Cid
from gpumesh.ipfs.dagpb import T_DIRECTORY, T_SYMLINK, PBLink, UnixfsData, encode_node, encode_unixfs
from gpumesh.ipfs.errors import IpfsError
from gpumesh.ipfs.unixfs import BlockSink, FileBuilder, ImportResult, PartsSink, _joining, import_file

HAMT_THRESHOLD = 256 * 1024  # boxo: HAMTShardingSize, estimated as sum(len(name) + len(cid bytes))


@dataclass(frozen=True, slots=True)
class Entry:
    """One added path, as `ipfs add` reports it (files first in walk order, then directories)."""

    name: str
    result: ImportResult


def _check_names(entries: list[tuple[str, Cid, int]]) -> None:
    names = [name for name, _, _ in entries]
    if len(set(names)) != len(names):
        raise IpfsError("duplicate names in a directory")
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise IpfsError(f"invalid directory entry name {name!r}")


def size_estimate(entries: list[tuple[str, Cid, int]]) -> int:
    """boxo's "links" size estimate of a directory: sum of len(name) + len(binary CID)."""
    return sum(len(name.encode("utf-8")) + len(cid.to_bytes()) for name, cid, _ in entries)


def _flat(entries: list[tuple[str, Cid, int]], cid_version: int) -> tuple[Cid, bytes, int]:
    ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    block = encode_node(
        [PBLink(cid, name, tsize) for name, cid, tsize in ordered], encode_unixfs(UnixfsData(T_DIRECTORY))
    )
    cid = Cid(cid_version, CODEC_DAG_PB, hashlib.sha256(block).digest())
    return cid, block, len(block) + sum(t for _, _, t in ordered)


def build_directory(
    entries: list[tuple[str, Cid, int]], cid_version: int = 0, *, shard_threshold: int = HAMT_THRESHOLD
) -> tuple[Cid, int, list[tuple[Cid, bytes]]]:
    """The directory Kubo writes for these entries: (root cid, Tsize, its blocks, root last).
    Flat while the estimate is <= shard_threshold (Kubo's Import.UnixFSHAMTDirectorySizeThreshold;
    0 disables sharding), a HAMT with fanout 256 above it."""
    _check_names(entries)
    if shard_threshold and size_estimate(entries) > shard_threshold:
        return hamt.build_shards(entries, cid_version)
    cid, block, tsize = _flat(entries, cid_version)
    return cid, tsize, [(cid, block)]


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
        parts_sink: PartsSink | None = None,
        shard_threshold: int = HAMT_THRESHOLD,
    ) -> None:
        self.cid_version = cid_version
        self.shard_threshold = shard_threshold
        self.raw_leaves = raw_leaves
        # every block (files', directories', symlinks') goes to one sink taking pieces
        # (gpumesh.ipfs.unixfs.PartsSink); a plain BlockSink is wrapped
        self._sink = parts_sink if parts_sink is not None else None if sink is None else _joining(sink)
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
        return FileBuilder(cid_version=self.cid_version, raw_leaves=self.raw_leaves, parts_sink=self._sink)

    def add_file(self, path: str, result: ImportResult) -> None:
        siblings, name = self._parent(path)
        siblings[name] = result
        self.entries.append(Entry(path.strip("/"), result))

    def add_symlink(self, path: str, target: str) -> None:
        cid, block = symlink_node(target, self.cid_version)
        if self._sink is not None:
            self._sink(cid, (block,))
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
            cid, tsize, blocks = build_directory(
                [(n, r.cid, r.tsize) for n, r in children.items()], self.cid_version,
                shard_threshold=self.shard_threshold,
            )
            if self._sink is not None:
                for c, block in blocks:
                    self._sink(c, (block,))
            res = ImportResult(cid, 0, tsize, len(blocks) + sum(r.blocks for r in children.values()))
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
    shard_threshold: int = HAMT_THRESHOLD,
) -> ImportResult:
    """`ipfs add -r PATH`: files streamed, symlinks stored as UnixFS symlinks. `entries`, if given,
    receives every added path in Kubo's output order. `shard_threshold` is Kubo's
    Import.UnixFSHAMTDirectorySizeThreshold (bytes of size estimate; 0 never shards)."""
    tree = TreeBuilder(cid_version=cid_version, raw_leaves=raw_leaves, sink=sink,
                       shard_threshold=shard_threshold)
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
