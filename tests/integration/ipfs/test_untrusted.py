"""Never trust the daemon: a corrupted block on disk and daemons that lie are all detected."""

from __future__ import annotations

import os

import pytest

from gpumesh.ipfs import reader
from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.dagpb import decode_node
from gpumesh.ipfs.errors import CidMismatch, CorruptBlock, IpfsUnreachable
from gpumesh.ipfs.kubo import KuboStore
from gpumesh.ipfs.node import EmbeddedNode
from gpumesh.ipfs.rpc import Commands
from gpumesh.ipfs.unixfs import CHUNK_SIZE

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]


def _second_leaf(repo, root: str) -> Cid:
    return decode_node(repo.get(Cid.parse(root))).links[1].cid


def test_corrupted_block_on_disk_is_reported_never_served(tmp_path):
    data = os.urandom(3 * CHUNK_SIZE)
    with EmbeddedNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        root = store.add_bytes(data)
        leaf = _second_leaf(node.repo, root)
        # The leaf's bytes inside its pack file (other blocks of the same add share the file).
        path, offset, length = node.repo.locate(leaf)
        assert length > 100 and path.stat().st_size >= 3 * CHUNK_SIZE
        with open(path, "r+b") as f:
            f.seek(offset + 100)
            byte = f.read(1)[0]
            f.seek(offset + 100)
            f.write(bytes([byte ^ 0x01]))  # one flipped bit, as bit rot would do

        with pytest.raises(CorruptBlock):
            node.repo.get(leaf)
        # Its neighbours in the same pack are untouched and still served (verified).
        for i in (0, 2):
            other = decode_node(node.repo.get(Cid.parse(root))).links[i].cid
            assert node.repo.locate(other)[0] == path
            assert data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] in store.block_get(other)
        # Through the RPC API: block/get answers an error, never the bytes ...
        with pytest.raises(CorruptBlock, match="corrupt"):
            store.block_get(leaf)
        # ... our store surfaces it as a failure (the daemon refused), and `cat` over HTTP is cut
        # off before the corrupt leaf rather than ending as if the file were whole.
        with pytest.raises(CorruptBlock):
            store.cat(root)
        import ipfshttpclient
        import requests

        with pytest.raises((ipfshttpclient.exceptions.Error, requests.exceptions.ChunkedEncodingError)):
            store._client.cat(root)


class _LyingCommands(Commands):
    """A daemon that lies on demand: other bytes for one block (`victim`) in block/get, other or
    missing bytes in cat streams, a wrong CID on add. It records which blocks were asked for."""

    victim: Cid | None = None
    cat_mode: str | None = None  # None (honest), "flip" (one byte changed), "short" (cut in half)
    asked: list[Cid] = []

    def block_get(self, req, resp):
        cid = Cid.parse(req.arg())
        _LyingCommands.asked.append(cid)
        if _LyingCommands.victim is not None and cid == _LyingCommands.victim:
            resp.stream([b"\x0a\x05evil!"])
            return
        super().block_get(req, resp)

    def cat(self, req, resp):
        mode = _LyingCommands.cat_mode
        if mode is None:
            super().cat(req, resp)
            return
        offset, n = req.integer("offset", 0), req.integer("length", 1 << 40)
        data = b"".join(reader.iter_file(Cid.parse(req.arg()), self.fetch_many, offset, n))
        if mode == "flip":
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        else:
            data = data[: len(data) // 2]
        resp.stream([data])

    def add(self, req, resp):
        if _LyingCommands.victim is not None:
            resp.ndjson([{"Name": "bytes", "Hash": str(Cid.of_block(b"other")), "Size": "5"}])
            # drain the upload so the client finishes sending
            while req.body.read(1 << 16):
                pass
            return
        super().add(req, resp)


class _LyingNode(EmbeddedNode):
    commands_class = _LyingCommands


@pytest.fixture
def lying(tmp_path):
    _LyingCommands.victim, _LyingCommands.cat_mode = None, None
    with _LyingNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr) as store:
        try:
            yield node, store
        finally:
            _LyingCommands.victim, _LyingCommands.cat_mode = None, None


def test_lying_http_daemon_is_detected(lying, tmp_path):
    node, store = lying
    data = os.urandom(3 * CHUNK_SIZE)
    root = store.add_bytes(data)
    assert store.cat(root) == data
    # Lies everywhere about the second leaf: in block/get and in the cat stream.
    _LyingCommands.victim = _second_leaf(node.repo, root)
    _LyingCommands.cat_mode = "flip"
    with pytest.raises(CidMismatch):
        store.cat(root)
    with pytest.raises(CidMismatch):
        store.block_get(_LyingCommands.victim)
    with pytest.raises(CidMismatch):
        store.get(root, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(CidMismatch):
        store.add_bytes(b"anything")


@pytest.mark.parametrize("mode", ["flip", "short"])
def test_a_lying_cat_stream_falls_back_to_verified_blocks(lying, mode):
    node, store = lying
    data = os.urandom(5 * CHUNK_SIZE + 7)
    root = store.add_bytes(data)
    leaves = [link.cid for link in decode_node(node.repo.get(Cid.parse(root))).links]
    _LyingCommands.asked.clear()
    assert store.cat(root) == data
    assert _LyingCommands.asked == [Cid.parse(root)]  # honest: leaves came through the cat stream
    _LyingCommands.cat_mode = mode
    _LyingCommands.asked.clear()
    # The bad bytes (flipped or missing, in the third leaf) never come out: from the first leaf
    # that does not hash right, the reader fetches the blocks themselves and verifies each.
    assert store.cat(root) == data
    assert _LyingCommands.asked == [Cid.parse(root), *leaves[2:]]
    assert store.cat(root, CHUNK_SIZE + 3, 2 * CHUNK_SIZE) == data[CHUNK_SIZE + 3 : 3 * CHUNK_SIZE + 3]


def test_unreachable_daemon_has_one_clear_message():
    with KuboStore("/ip4/127.0.0.1/tcp/9", timeout=2, retries=1) as store:
        with pytest.raises(IpfsUnreachable) as exc:
            store.version()
    assert str(exc.value) == "IPFS API at http://127.0.0.1:9 is unreachable (connection refused)"
