"""The add upload path end to end on a real embedded node: a client that hangs up mid-upload leaves
nothing visible and the node serving; an upload altered on its way into the node is rejected by
the client (its CID check); Content-Length and chunked framings import alike."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.errors import CidMismatch, IpfsError
from gpumesh.ipfs.kubo import KuboStore
from gpumesh.ipfs.multipart import content_type_header, part_head
from gpumesh.ipfs.node import EmbeddedNode
from gpumesh.ipfs.rpc import Commands
from gpumesh.ipfs.unixfs import CHUNK_SIZE, FileBuilder, cid_of_bytes

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]


def _leaf_cids(data: bytes) -> list:
    got: list = []
    fb = FileBuilder(sink=lambda c, b: got.append(c))
    fb.write(data)
    fb.finish()
    return got[:-1]  # children before the root


@pytest.mark.parametrize("framing", ["sized", "chunked"])
def test_a_client_that_hangs_up_mid_upload_leaves_nothing_visible(tmp_path, framing):
    data = os.urandom(6 * CHUNK_SIZE)
    sent = data[: 4 * CHUNK_SIZE + 100]  # four whole leaves reach the node, then the client leaves
    head = part_head("f", "application/octet-stream", "bnd")
    with EmbeddedNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        s = socket.create_connection((node.host, node.port))
        hdr = (f"POST /api/v0/add?pin=true HTTP/1.1\r\nHost: x\r\n"
               f"Content-Type: {content_type_header('bnd')}\r\n")
        if framing == "sized":
            s.sendall((hdr + f"Content-Length: {len(head) + len(data) + 100}\r\n\r\n").encode() + head + sent)
        else:
            body = head + sent
            s.sendall((hdr + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n" % len(body) + body + b"\r\n")
        s.close()
        # add holds the node's write lock: this add runs after the aborted one has finished.
        other = os.urandom(CHUNK_SIZE + 1)
        assert store.add_bytes(other) == cid_of_bytes(other)
        assert store.cat(cid_of_bytes(other)) == other
        for cid in _leaf_cids(data)[:4]:
            assert not node.repo.has(cid)
        assert node.repo.pins == {Cid.parse(cid_of_bytes(other))}  # the aborted add pinned nothing


class _AlteringCommands(Commands):
    """Imports (through the real receive path) the upload with one byte flipped, as a daemon with
    bad memory or a broken proxy would, and honestly reports the CID of what it stored."""

    def add(self, req, resp):
        body, flipped = req.body, [False]

        class Flip:
            done = property(lambda self: body.done)

            def readinto(self, view):
                n = body.readinto(view)
                if n > 1000 and not flipped[0]:
                    view[n // 2] ^= 1  # inside the data, not in the framing
                    flipped[0] = True
                return n

            def read(self, n=-1):
                return body.read(n)

        req.body = Flip()
        super().add(req, resp)


class _AlteringNode(EmbeddedNode):
    commands_class = _AlteringCommands


def test_an_upload_altered_inside_the_node_is_rejected_by_the_client(tmp_path):
    with _AlteringNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        data = os.urandom(3 * CHUNK_SIZE)
        with pytest.raises(CidMismatch):
            store.add_bytes(data)
        src = tmp_path / "f.bin"
        src.write_bytes(data)
        with pytest.raises(CidMismatch):
            store.add_path(src)


def test_sized_and_chunked_uploads_of_a_tree_agree(tmp_path, node):
    import ipfshttpclient

    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    (root / "d" / "big").write_bytes(os.urandom(3 * CHUNK_SIZE + 7))
    (root / "small").write_bytes(b"hello world\n")
    with KuboStore(node.api_multiaddr) as store:
        ours = store.add_path(root)  # Content-Length upload
    c = ipfshttpclient.Client(node.api_multiaddr)  # its own chunked multipart encoder
    try:
        theirs = [e["Hash"] for e in c.add(str(root), recursive=True) if e["Name"] == "t"]
    finally:
        c.close()
    assert theirs == [ours]


def test_parallel_adds_are_serialised_and_all_land(node):
    datas = [os.urandom(2 * CHUNK_SIZE + i) for i in range(4)]
    got: list = [None] * 4

    def run(i: int) -> None:
        with KuboStore(node.api_multiaddr) as store:
            got[i] = store.add_bytes(datas[i])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [cid_of_bytes(d) for d in datas]


class _SeenBodies(Commands):
    bodies: list[str] = []

    def add(self, req, resp):
        _SeenBodies.bodies.append(type(req.body).__name__)
        super().add(req, resp)


class _SeenNode(EmbeddedNode):
    commands_class = _SeenBodies


def test_kubostore_uploads_with_a_content_length(tmp_path):
    # The fast path: a sized body (urllib3 copies every chunk of a chunked one).
    _SeenBodies.bodies = []
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(CHUNK_SIZE + 3))
    with _SeenNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        store.add_path(src)
        store.add_bytes(b"x" * 1000)
        store.add_path(tmp_path, cid_version=1)  # a directory: repo/ and f.bin
    assert _SeenBodies.bodies == ["_Sized", "_Sized", "_Sized"]


def test_a_file_that_shrinks_during_the_upload_is_an_error_and_stores_nothing(tmp_path, monkeypatch):
    src = tmp_path / "f.bin"
    data = os.urandom(2 * CHUNK_SIZE)
    src.write_bytes(data)
    real_stat = type(src).stat

    def stat(self, **kw):  # the size add_path announces: 100 bytes more than the file will give
        st = real_stat(self, **kw)
        if self.name != "f.bin":
            return st
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                               st.st_size + 100, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    with EmbeddedNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        monkeypatch.setattr(type(src), "stat", stat)
        with pytest.raises(IpfsError, match="shorter"):
            store.add_path(src)
        monkeypatch.undo()
        assert store.add_bytes(b"still serving") == cid_of_bytes(b"still serving")
        assert not any(node.repo.has(c) for c in _leaf_cids(data))
