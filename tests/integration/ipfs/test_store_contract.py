"""One contract suite for the ContentStore port, run against MemoryStore (the fake) and against
KuboStore talking to the real embedded node over HTTP: if the fake drifts from the real adapter,
the same test fails on one side only."""

from __future__ import annotations

import io
import os

import pytest

from gpumesh.ipfs.errors import CidMismatch, IpfsError, NotFound
from gpumesh.ipfs.store import ContentStore, MemoryStore
from gpumesh.ipfs.unixfs import CHUNK_SIZE, cid_of_bytes

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(params=["memory", pytest.param("kubo", marks=pytest.mark.integration)])
def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    from gpumesh.ipfs.kubo import KuboStore

    node = request.getfixturevalue("node")
    s = KuboStore(node.api_multiaddr, timeout=30)
    yield s
    s.close()


def test_is_a_content_store(store):
    assert isinstance(store, ContentStore)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])
@pytest.mark.parametrize("cid_version", [0, 1])
def test_add_bytes_gives_the_importer_cid_and_cat_round_trips(store, size, cid_version):
    data = os.urandom(size)
    cid = store.add_bytes(data, cid_version=cid_version)
    assert cid == cid_of_bytes(data, cid_version)
    assert store.cat(cid) == data
    assert store.has(cid)


def test_published_cid(store):
    assert store.add_bytes(b"hello world\n") == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


@pytest.mark.parametrize(("offset", "length"), [(0, None), (5, None), (CHUNK_SIZE - 3, 10),
                                                (CHUNK_SIZE, CHUNK_SIZE), (0, 0), (10**9, 5)])
def test_cat_ranges(store, offset, length):
    data = os.urandom(2 * CHUNK_SIZE + 100)
    cid = store.add_bytes(data)
    end = None if length is None else offset + length
    assert store.cat(cid, offset, length) == data[offset:end]


def test_cat_to_streams_into_a_file(store):
    data = os.urandom(CHUNK_SIZE + 5)
    buf = io.BytesIO()
    assert store.cat_to(store.add_bytes(data), buf) == len(data)
    assert buf.getvalue() == data


def test_add_path_file_and_directory_then_get(store, tmp_path):
    src = tmp_path / "planets"
    (src / "inner").mkdir(parents=True)
    (src / "mars.txt").write_text("Hello Mars!\n")
    (src / "venus.txt").write_text("Hello Venus!\n")
    (src / "inner" / "big.bin").write_bytes(os.urandom(CHUNK_SIZE * 2 + 1))
    root = store.add_path(src)
    f = store.add_path(src / "mars.txt")
    assert f == "QmPrrHqJzto9m7SyiRzarwkqPcCSsKR2EB1AyqJfe8L8tN"  # Kubo's t0040 MARS
    assert store.cat(f"{root}/mars.txt") == b"Hello Mars!\n"
    out = store.get(root, tmp_path / "out")
    assert (out / "venus.txt").read_text() == "Hello Venus!\n"
    assert (out / "inner" / "big.bin").read_bytes() == (src / "inner" / "big.bin").read_bytes()
    planets_only = tmp_path / "p2" / "planets"
    planets_only.mkdir(parents=True)
    for n in ("mars.txt", "venus.txt"):
        (planets_only / n).write_bytes((src / n).read_bytes())
    assert store.add_path(planets_only) == "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"
    assert store.add_path(planets_only, cid_version=1) == (
        "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi")


def test_cat_of_a_directory_is_an_error(store, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("x")
    with pytest.raises(IpfsError):
        store.cat(store.add_path(d))


def test_pin_unpin(store):
    cid = store.add_bytes(b"pin me", pin=False)
    store.pin(cid)
    store.unpin(cid)
    with pytest.raises(IpfsError):
        store.unpin(cid)


def test_missing_content(store):
    absent = cid_of_bytes(b"never added anywhere " + os.urandom(8))
    assert not store.has(absent)
    with pytest.raises(NotFound):
        store.cat(absent)


def test_id_and_version(store):
    assert store.id()["ID"]
    assert store.version()


def test_a_lying_memory_store_is_caught():
    s = MemoryStore()
    data = os.urandom(3 * CHUNK_SIZE)
    cid = s.add_bytes(data)
    assert s.cat(cid) == data
    # Lie about one leaf in the middle of the file: the reader must refuse, not return bytes.
    from gpumesh.ipfs.cid import Cid
    from gpumesh.ipfs.dagpb import decode_node

    leaf = decode_node(s.blocks[Cid.parse(cid).digest]).links[1].cid
    s.tamper(leaf, b"\x0a\x03xyz")
    with pytest.raises(CidMismatch):
        s.cat(cid)
    s.lie_about_add = True
    assert s.add_bytes(b"x") != cid_of_bytes(b"x")  # the fake really lies when told to
