"""The ranged reader (leaf bytes from one untrusted stream, each leaf rebuilt and hashed): the bytes of
any range are the original bytes, for Kubo-shaped DAGs and for DAGs of other shapes, and no lie gets
through. Expectations are slices of the original data, never the reader's own output."""

from __future__ import annotations

import hashlib
import os

import pytest

from gpumesh.ipfs.cid import CODEC_DAG_PB, CODEC_RAW, Cid
from gpumesh.ipfs.dagpb import T_FILE, T_RAW, PBLink, UnixfsData, decode_node, encode_node, encode_unixfs
from gpumesh.ipfs.errors import CidMismatch
from gpumesh.ipfs.store import MemoryStore
from gpumesh.ipfs.unixfs import FileBuilder, leaf_frame


class CountingStore(MemoryStore):
    """MemoryStore that counts the blocks read one by one (the ranged path should need few)."""

    def __init__(self) -> None:
        super().__init__()
        self.block_reads = 0

    def _fetch_many(self, cids):
        for block in super()._fetch_many(cids):
            self.block_reads += 1
            yield block


def _put(store: MemoryStore, block: bytes, version: int = 0, codec: int = CODEC_DAG_PB) -> Cid:
    cid = Cid(version, codec, hashlib.sha256(block).digest())
    store.blocks[cid.digest] = block
    return cid


def _build(store, data, cid_version, chunk, links):
    b = FileBuilder(cid_version=cid_version, sink=store._put, chunk_size=chunk, max_links=links)
    b.write(data)
    return b.finish()


RANGES = [(0, None), (0, 1), (1, 999), (999, 2), (1000, 1000), (1234, 5000), (4999, None), (0, 10**9)]


@pytest.mark.parametrize("cid_version", [0, 1])
@pytest.mark.parametrize(("offset", "length"), RANGES)
def test_deep_kubo_shaped_trees_read_back_exactly(cid_version, offset, length):
    data = os.urandom(10_000)  # 10 leaves of 1000 bytes, 3 links per node: three levels
    store = CountingStore()
    res = _build(store, data, cid_version, 1000, 3)
    end = None if length is None else offset + length
    store.block_reads = 0
    assert store.cat(res.cid, offset, length) == data[offset:end]
    internal = res.blocks - 10
    assert store.block_reads <= internal  # the leaves came from the stream, verified one by one


def test_inline_data_and_leaves_of_another_encoding_still_read_right():
    store = CountingStore()
    # Leaf 1: raw. Leaf 2: a dag-pb leaf typed Raw (0) instead of File: same length as Kubo's
    # frame, so it is guessed as a leaf, its rebuilt block hashes differently, and the reader must
    # fall back to reading the block itself.
    a, b = os.urandom(700), os.urandom(900)
    raw_leaf = _put(store, a, 1, CODEC_RAW)
    odd = encode_node([], encode_unixfs(UnixfsData(T_RAW, b, len(b))))
    prefix, suffix = leaf_frame(len(b))
    assert len(odd) == len(prefix) + len(b) + len(suffix)
    odd_leaf = _put(store, odd)
    head = b"inline head "
    root_block = encode_node(
        [PBLink(raw_leaf, "", len(a)), PBLink(odd_leaf, "", len(odd))],
        encode_unixfs(UnixfsData(T_FILE, head, len(head) + len(a) + len(b), (len(a), len(b)))),
    )
    root = _put(store, root_block)
    whole = head + a + b
    for offset, length in [(0, None), (5, 20), (len(head) + 600, 300), (len(head) + len(a) + 1, None)]:
        end = None if length is None else offset + length
        assert store.cat(root, offset, length) == whole[offset:end]


def test_a_link_that_only_claims_to_be_a_leaf_is_walked_as_what_it_is():
    store = MemoryStore()
    data = os.urandom(3000)
    inner = _build(store, data, 0, 1000, 3)  # a parent of 3 leaves
    # Claim a Tsize equal to a 3000-byte leaf's frame: the reader guesses "leaf", the hash says no.
    prefix, suffix = leaf_frame(3000)
    fake_tsize = len(prefix) + 3000 + len(suffix)
    root = _put(store, encode_node([PBLink(inner.cid, "", fake_tsize)],
                                   encode_unixfs(UnixfsData(T_FILE, None, 3000, (3000,)))))
    assert store.cat(root) == data
    assert store.cat(root, 1500, 1000) == data[1500:2500]


def test_a_lying_stream_is_never_believed():
    store = MemoryStore()
    data = os.urandom(5000)
    res = _build(store, data, 0, 1000, 3)
    store.lie_in_cat = True
    assert store.cat(res.cid) == data  # the flipped bytes were refused; blocks were read instead
    assert store.cat(res.cid, 2500, 100) == data[2500:2600]
    # If the blocks lie too, nothing is returned at all.
    first_leaf = decode_node(store.blocks[res.cid.digest]).links[0].cid
    while first_leaf.digest in store.blocks and decode_node(store.blocks[first_leaf.digest]).links:
        first_leaf = decode_node(store.blocks[first_leaf.digest]).links[0].cid
    store.tamper(first_leaf, b"\x0a\x03xyz")
    with pytest.raises(CidMismatch):
        store.cat(res.cid)


def test_a_stream_that_ends_early_falls_back():
    store = MemoryStore()
    data = os.urandom(4000)
    res = _build(store, data, 1, 1000, 174)

    def short(cid, offset, length):
        yield from store.__class__._fetch_range(store, cid, offset, min(length, 1500))

    store._fetch_range = short  # type: ignore[method-assign]
    assert store.cat(res.cid) == data
