"""HAMT-sharded directories through the real embedded node: ipfshttpclient and KuboStore.

The directory is Kubo's smallest sharded one from test/cli/cid_profiles_test.go (profile
unixfs-v0-2015, Kubo's default): 4033 one-byte files with 31-char names, whose root Kubo published
as QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP. Names are rebuilt by tests/unit/ipfs/kubonames.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gpumesh.ipfs import reader
from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.dagpb import T_HAMT_SHARD, decode_node, decode_unixfs
from gpumesh.ipfs.errors import CorruptBlock
from gpumesh.ipfs.kubo import KuboStore
from gpumesh.ipfs.node import EmbeddedNode
from gpumesh.ipfs.unixfs_dir import import_directory

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]

_spec = importlib.util.spec_from_file_location(
    "kubonames", Path(__file__).parents[2] / "unit" / "ipfs" / "kubonames.py")
kubonames = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kubonames)

HAMT_CID = "QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP"  # Kubo, cid_profiles unixfs-v0-2015


@pytest.fixture(scope="module")
def hamt_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("profile") / "hamt"
    d.mkdir()
    for name in kubonames.kubo_hamt_names("hamt-unixfs-v0-2015", 4033, 31):
        (d / name).write_bytes(b"x")
    return d


def _same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_ipfshttpclient_add_ls_cat_get(client, hamt_dir, tmp_path):
    res = client.add(str(hamt_dir), recursive=True)
    assert res[-1]["Name"] == "hamt" and res[-1]["Hash"] == HAMT_CID
    links = client.ls(HAMT_CID)["Objects"][0]["Links"]
    names = [x["Name"] for x in links]
    assert len(names) == 4033 == len(set(names))
    assert set(names) == {p.name for p in hamt_dir.iterdir()}
    assert {(x["Type"], x["Size"]) for x in links} == {(2, 1)}
    some = names[1234]
    assert client.cat(f"/ipfs/{HAMT_CID}/{some}") == b"x"
    client.get(HAMT_CID, target=str(tmp_path / "out"))
    assert _same_tree(hamt_dir, tmp_path / "out" / HAMT_CID)


def test_kubostore_add_get_and_path(node, hamt_dir, tmp_path):
    with KuboStore(node.api_multiaddr, timeout=60) as store:
        root = store.add_path(hamt_dir)
        assert root == HAMT_CID
        assert reader.decode(Cid.parse(root), store.block_get(root)).kind == T_HAMT_SHARD
        some = sorted(p.name for p in hamt_dir.iterdir())[7]
        assert store.cat(f"{root}/{some}") == b"x"
        out = store.get(root, tmp_path / "out")
        assert _same_tree(hamt_dir, out)


def test_kubostore_cidv1_sharded_add_and_path(node, hamt_dir):
    # No Kubo CID is published for this one (its v1 form is sharded too: 4033 * (31 + 36) bytes);
    # the node and the client's own importer must agree, and a path inside must resolve.
    with KuboStore(node.api_multiaddr, timeout=60) as store:
        root = store.add_path(hamt_dir, cid_version=1)
        assert root == str(import_directory(hamt_dir, 1).cid) and root.startswith("bafy")
        assert reader.decode(Cid.parse(root), store.block_get(root)).kind == T_HAMT_SHARD
        some = sorted(p.name for p in hamt_dir.iterdir())[-1]
        assert store.cat(f"/ipfs/{root}/{some}") == b"x"


def test_a_corrupted_shard_on_disk_is_reported_never_served(hamt_dir, tmp_path):
    import ipfshttpclient
    import requests

    with EmbeddedNode(tmp_path / "repo") as node, KuboStore(node.api_multiaddr, timeout=60) as store:
        root = Cid.parse(store.add_path(hamt_dir))
        # A child shard (a link named by its slot alone) of the root.
        child = next(lk.cid for lk in decode_node(node.repo.get(root)).links if len(lk.name or "") == 2)
        assert decode_unixfs(decode_node(node.repo.get(child)).data).type == T_HAMT_SHARD
        path, offset, length = node.repo.locate(child)
        with open(path, "r+b") as f:
            f.seek(offset + length // 2)
            byte = f.read(1)[0]
            f.seek(offset + length // 2)
            f.write(bytes([byte ^ 0x01]))

        with pytest.raises(CorruptBlock):
            node.repo.get(child)
        with pytest.raises(CorruptBlock):
            store.get(str(root), tmp_path / "out")
        with pytest.raises(ipfshttpclient.exceptions.Error):
            store._client.ls(str(root))
        with pytest.raises((ipfshttpclient.exceptions.Error, requests.exceptions.ChunkedEncodingError)):
            store._client.get(str(root), target=str(tmp_path / "out2"))
