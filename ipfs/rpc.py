"""The Kubo RPC commands the embedded node serves, over a `Repo`.

Adapter-internal: imported by gpumesh.ipfs.node. Formats follow Kubo's RPC reference: add answers
NDJSON `{"Name","Hash","Size"}` (Size a string, the cumulative size) with `{"Name","Bytes"}`
progress lines; get answers a tar stream; errors are `{"Message","Code","Type":"error"}` (500,
or 400 with Code 1 for bad arguments). Every block read from disk is verified (Repo.get).
"""

from __future__ import annotations

import platform
import tarfile
import threading
from collections.abc import Iterator

from gpumesh.ipfs import reader, upload
from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid, as_cid
from gpumesh.ipfs.dagpb import T_DIRECTORY, T_FILE, T_HAMT_SHARD, T_SYMLINK, decode_node
from gpumesh.ipfs.errors import IpfsError
from gpumesh.ipfs.multipart import each_part
from gpumesh.ipfs.repo import REPO_VERSION, Repo
from gpumesh.ipfs.rpc_http import ClientError, Command, Request, Response
from gpumesh.ipfs.unixfs import CHUNK_SIZE
from gpumesh.ipfs.unixfs_dir import TreeBuilder

VERSION = "0.1.0"
AGENT = f"gpumesh-embedded/{VERSION}"


class Commands:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        # add/pin hold it shared-ish (serialised), gc exclusively: gc never sweeps a block that an
        # add in progress has written but not pinned yet.
        self.write_lock = threading.RLock()
        self.rings = upload.Rings()  # add's receive buffers, kept for the next add

    def fetch_many(self, cids: list[Cid]) -> Iterator[bytes]:
        for c in cids:
            yield self.repo.get(c)

    def _resolve(self, path: str) -> Cid:
        return reader.resolve(path, self.fetch_many)

    def table(self) -> dict[str, Command]:
        return {
            "add": self.add, "cat": self.cat, "get": self.get, "ls": self.ls,
            "block/get": self.block_get, "block/put": self.block_put, "block/stat": self.block_stat,
            "block/rm": self.block_rm, "pin/add": self.pin_add, "pin/rm": self.pin_rm,
            "pin/ls": self.pin_ls, "id": self.id, "version": self.version, "repo/gc": self.repo_gc,
        }

    # -- add -----------------------------------------------------------------------------------------
    def add(self, req: Request, resp: Response) -> None:
        cid_version = req.integer("cid-version", 0)
        if cid_version not in (0, 1):
            raise ClientError(f"unknown CID version {cid_version}")
        raw_leaves = req.flag("raw-leaves", cid_version == 1)
        only_hash = req.flag("only-hash", False)
        pin = req.flag("pin", True)
        progress = req.flag("progress", False)
        chunker = req.opt("chunker")
        if chunker not in (None, "", f"size-{CHUNK_SIZE}"):
            raise ClientError(f"chunker {chunker!r} is not supported (only size-{CHUNK_SIZE})")
        if req.opt("hash", "sha2-256") != "sha2-256":
            raise ClientError("only the sha2-256 hash is supported")
        if req.flag("trickle", False) or req.flag("inline", False) or req.flag("nocopy", False):
            raise ClientError("trickle, inline and nocopy are not supported")
        batch = None if only_hash else self.repo.batch()
        wrap = req.flag("wrap-with-directory", False)
        tree = TreeBuilder(cid_version=cid_version, raw_leaves=raw_leaves, wrap=wrap,
                           parts_sink=None if batch is None else batch.put_parts)
        # Replies are buffered until the upload is read to its end: a client that streams its body
        # before it reads ours (requests does) could otherwise deadlock with us on full buffers.
        with self.write_lock:
            try:
                out = upload.receive(req.body, req.content_type, tree, progress=progress, rings=self.rings)
                entries = tree.finish()
                if batch is not None:
                    batch.commit()  # every block durable before anything is pinned or reported
            except BaseException:
                if batch is not None:
                    batch.abort()
                raise
            if pin and not only_hash:
                # Kubo pins what it reports as roots: the wrapper, or each top-level item.
                for e in entries:
                    if (e.name == "") if wrap else ("/" not in e.name):
                        self.repo.add_pin(e.result.cid)
        for e in entries:
            name = str(e.result.cid) if e.name.startswith("\0") else e.name
            out.append({"Name": name, "Hash": str(e.result.cid), "Size": str(e.result.tsize)})
        resp.ndjson(out)

    # -- reads ---------------------------------------------------------------------------------------
    def cat(self, req: Request, resp: Response) -> None:
        offset = req.integer("offset", 0)
        length = req.opt("length")
        if offset < 0:
            raise IpfsError("cannot specify negative offset")
        n = None if length is None else req.integer("length", 0)
        if n is not None and n < 0:
            raise IpfsError("cannot specify negative length")
        cids = [self._resolve(a) for a in (req.args or [req.arg()])]

        def chunks() -> Iterator[bytes]:
            for c in cids:
                yield from reader.iter_file(c, self.fetch_many, offset, n)

        resp.stream(chunks())

    def get(self, req: Request, resp: Response) -> None:
        path = req.arg()
        cid = self._resolve(path)
        name = path.rstrip("/").rsplit("/", 1)[-1] or str(cid)
        resp.stream(_tar_stream(self, cid, name), "application/x-tar")

    def ls(self, req: Request, resp: Response) -> None:
        objects = []
        for a in req.args or [req.arg()]:
            cid = self._resolve(a)
            node = reader.decode(cid, self.repo.get(cid))
            # A sharded directory lists its entries, not its shard links (as Kubo's ls does).
            entries = (
                [(e.name, e.cid, e.tsize) for e in reader.list_node(node, self.fetch_many)]
                if node.kind == T_HAMT_SHARD
                else [(link.name, link.cid, link.tsize) for link in node.links]
            )
            links = []
            for name, link_cid, tsize in entries:
                typ, size, target = 0, tsize or 0, ""
                if self.repo.has(link_cid):
                    child = reader.decode(link_cid, self.repo.get(link_cid))
                    typ = {T_DIRECTORY: 1, T_HAMT_SHARD: 1, T_FILE: 2, T_SYMLINK: 4}.get(child.kind, 0)
                    size = reader.file_size(child) if child.kind == T_FILE else 0
                    target = child.data.decode("utf-8", "replace") if child.kind == T_SYMLINK else ""
                links.append({"Name": name or "", "Hash": str(link_cid), "Size": size,
                              "Type": typ, "Target": target})
            objects.append({"Hash": a, "Links": links})
        resp.json({"Objects": objects})

    # -- blocks --------------------------------------------------------------------------------------
    def block_get(self, req: Request, resp: Response) -> None:
        block = self.repo.get(as_cid(req.arg("cid")))
        resp.stream([block])

    def block_stat(self, req: Request, resp: Response) -> None:
        cid = as_cid(req.arg("cid"))
        resp.json({"Key": str(cid), "Size": self.repo.size(cid)})

    def block_rm(self, req: Request, resp: Response) -> None:
        out = []
        for a in req.args or [req.arg("cid")]:
            cid = as_cid(a)
            self.repo.delete(cid)
            out.append({"Hash": str(cid)})
        resp.ndjson(out)

    def block_put(self, req: Request, resp: Response) -> None:
        fmt = req.opt("format")
        codec_name = req.opt("cid-codec") or ("dag-pb" if fmt in ("v0", "protobuf") else "raw")
        if req.opt("mhtype", "sha2-256") != "sha2-256":
            raise ClientError("only the sha2-256 multihash is supported")
        if codec_name not in ("raw", "dag-pb"):
            raise ClientError(f"codec {codec_name!r} is not supported (raw, dag-pb)")
        codec = CODEC_DAG_PB if codec_name == "dag-pb" else CODEC_RAW
        version = 0 if fmt in ("v0", "protobuf") else 1
        out = []
        pin = req.flag("pin", False)

        def put(data: bytes) -> None:
            if codec == CODEC_DAG_PB:
                decode_node(data)  # Kubo refuses dag-pb blocks that do not decode
            cid = Cid.of_block(data, version=version, codec=codec)
            self.repo.put(cid, data)
            if pin:
                self.repo.add_pin(cid)
            out.append({"Key": str(cid), "Size": len(data)})

        with self.write_lock:
            each_part(req.body, req.content_type, reader.MAX_BLOCK_SIZE, put)
        if len(out) == 1:
            resp.json(out[0])
        else:
            resp.ndjson(out)

    # -- pins ----------------------------------------------------------------------------------------
    def pin_add(self, req: Request, resp: Response) -> None:
        if not req.flag("recursive", True):
            raise ClientError("direct pins are not supported by the embedded node")
        done = []
        with self.write_lock:
            for a in req.args or [req.arg()]:
                cid = self._resolve(a)
                for _ in reader.walk_dag(cid, self.fetch_many):  # all present and all valid
                    pass
                self.repo.add_pin(cid)
                done.append(str(cid))
        resp.json({"Pins": done})

    def pin_rm(self, req: Request, resp: Response) -> None:
        done = []
        for a in req.args or [req.arg()]:
            cid = self._resolve(a)
            self.repo.remove_pin(cid)
            done.append(str(cid))
        resp.json({"Pins": done})

    def pin_ls(self, req: Request, resp: Response) -> None:
        typ = req.opt("type", "all")
        if typ not in ("all", "recursive", "direct", "indirect"):
            raise ClientError(f"invalid type {typ!r}, must be one of all, direct, indirect, recursive")
        keys: dict[str, dict] = {}
        pins = self.repo.pins
        if typ in ("all", "indirect"):
            for p in pins:
                for c, _ in list(reader.walk_dag(p, self.fetch_many))[1:]:
                    keys.setdefault(str(c), {"Type": "indirect"})
        if typ in ("all", "recursive"):
            for p in pins:
                keys[str(p)] = {"Type": "recursive"}
        if req.args:
            wanted = {}
            for a in req.args:
                c = str(self._resolve(a))
                if c not in keys:
                    raise IpfsError(f"path '{a}' is not pinned")
                wanted[c] = keys[c]
            keys = wanted
        resp.json({"Keys": keys})

    # -- node ----------------------------------------------------------------------------------------
    def id(self, req: Request, resp: Response) -> None:
        resp.json({"ID": self.repo.peer_id, "PublicKey": "", "Addresses": [], "AgentVersion": AGENT,
                   "ProtocolVersion": "ipfs/0.1.0", "Protocols": []})

    def version(self, req: Request, resp: Response) -> None:
        resp.json({"Version": VERSION, "Commit": "", "Repo": REPO_VERSION,
                   "System": f"{platform.machine()}/{platform.system().lower()}", "Golang": ""})

    def repo_gc(self, req: Request, resp: Response) -> None:
        with self.write_lock:
            live: set[bytes] = set()
            for p in self.repo.pins:
                live.update(c.digest for c, _ in reader.walk_dag(p, self.fetch_many))
            removed = [{"Key": {"/": str(c)}} for c in self.repo.gc(live)]
        resp.ndjson(removed)


class _ChunkSink:
    """A write-only file object that collects tar output for the chunked response."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class _IterReader:
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._buf) < n) and (chunk := next(self._it, None)) is not None:
            self._buf += chunk
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


def _tar_stream(cmds: Commands, root: Cid, name: str) -> Iterator[bytes]:
    sink = _ChunkSink()
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def add(cid: Cid, path: str, depth: int) -> Iterator[bytes]:
        if depth > reader.MAX_DEPTH:
            raise IpfsError("directory tree deeper than the depth limit")
        node = reader.decode(cid, cmds.repo.get(cid))
        info = tarfile.TarInfo(path)
        info.mode = 0o644
        if node.kind in reader.DIRECTORY_KINDS:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            yield sink.take()
            for e in reader.list_node(node, cmds.fetch_many):
                yield from add(e.cid, f"{path}/{e.name}", depth + 1)
        elif node.kind == T_SYMLINK:
            info.type, info.linkname = tarfile.SYMTYPE, node.data.decode("utf-8", "replace")
            tar.addfile(info)
            yield sink.take()
        else:
            info.size = reader.file_size(node)
            tar.addfile(info, _IterReader(reader.iter_file(cid, cmds.fetch_many)))
            yield sink.take()

    yield from add(root, name, 0)
    tar.close()
    yield sink.take()


__all__ = ["AGENT", "Commands", "VERSION"]
