"""Edge sizes and tree shape of the importer, checked against a second, independent implementation.

`_ref_cid` below is written from the UnixFS / dag-pb specs with hand-made protobuf bytes and a
bottom-up tree (group leaves by MAX_LINKS until one node remains). It shares no code with
gpumesh.ipfs. It is itself anchored by the published Kubo CIDs that it must reproduce too
(test_reference_reproduces_published_cids), so agreement on sizes Kubo never published means
something. Structure properties (link counts, blocksizes, Tsize sums, leaf depth) are checked on
the blocks the importer emits.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.dagpb import T_FILE, decode_node, decode_unixfs
from gpumesh.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, FileBuilder, cid_of_bytes

CH = 256 * 1024
assert CHUNK_SIZE == CH and MAX_LINKS == 174  # Kubo's documented defaults


# ---- the independent reference -------------------------------------------------------------------
def _uv(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _ref_leaf(chunk: bytes) -> tuple[bytes, int, int]:
    """(binary CIDv0, filesize, tsize) of a dag-pb File leaf."""
    inner = b"\x08\x02" + (b"\x12" + _uv(len(chunk)) + chunk if chunk else b"") + b"\x18" + _uv(len(chunk))
    block = b"\x0a" + _uv(len(inner)) + inner
    return b"\x12\x20" + hashlib.sha256(block).digest(), len(chunk), len(block)


def _ref_parent(children: list[tuple[bytes, int, int]]) -> tuple[bytes, int, int]:
    links = b""
    for cid, _, tsize in children:
        link = b"\x0a" + _uv(len(cid)) + cid + b"\x12\x00" + b"\x18" + _uv(tsize)
        links += b"\x12" + _uv(len(link)) + link
    total = sum(c[1] for c in children)
    inner = b"\x08\x02" + b"\x18" + _uv(total) + b"".join(b"\x20" + _uv(c[1]) for c in children)
    block = links + b"\x0a" + _uv(len(inner)) + inner
    return b"\x12\x20" + hashlib.sha256(block).digest(), total, len(block) + sum(c[2] for c in children)


def _ref_cid(data: bytes, chunk: int = CH, max_links: int = MAX_LINKS) -> str:
    level = [_ref_leaf(data[i : i + chunk]) for i in range(0, len(data), chunk)] or [_ref_leaf(b"")]
    while len(level) > 1:
        level = [_ref_parent(level[i : i + max_links]) for i in range(0, len(level), max_links)]
    return str(Cid.from_bytes(level[0][0]))


def test_reference_reproduces_published_cids():
    assert _ref_cid(b"hello world\n") == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert _ref_cid(b"") == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def _data(n: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---- edge sizes ----------------------------------------------------------------------------------
EDGE_SIZES = [0, 1, CH - 1, CH, CH + 1, 2 * CH, MAX_LINKS * CH, MAX_LINKS * CH + 1]


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_edge_sizes_agree_with_reference_and_have_balanced_shape(size):
    data = _data(size)
    blocks: dict[Cid, bytes] = {}
    b = FileBuilder(sink=lambda c, blk: blocks.__setitem__(c, blk))
    b.write(data)
    res = b.finish()
    assert str(res.cid) == _ref_cid(data)
    assert res.size == size
    assert res.blocks == len(blocks)

    leaf_depths: set[int] = set()
    leaves: list[int] = []

    def check(cid: Cid, depth: int) -> tuple[int, int]:
        block = blocks[cid]
        assert cid.matches(block)
        node = decode_node(block)
        u = decode_unixfs(node.data)
        assert u.type == T_FILE
        if not node.links:
            leaf_depths.add(depth)
            leaves.append(len(u.data or b""))
            assert u.filesize == len(u.data or b"")
            return u.filesize, len(block)
        assert 1 <= len(node.links) <= MAX_LINKS
        sizes = [check(link.cid, depth + 1) for link in node.links]
        assert list(u.blocksizes) == [s for s, _ in sizes]
        assert u.filesize == sum(u.blocksizes)
        assert [link.tsize for link in node.links] == [t for _, t in sizes]
        assert all(link.name == "" for link in node.links)
        return u.filesize, len(block) + sum(t for _, t in sizes)

    filesize, tsize = check(res.cid, 0)
    assert (filesize, tsize) == (size, res.tsize)
    assert len(leaf_depths) == 1  # balanced: every leaf at the same depth
    assert all(n == CH for n in leaves[:-1]) and 0 <= leaves[-1] <= CH
    expected_depth = 0 if size <= CH else (1 if size <= MAX_LINKS * CH else 2)
    assert leaf_depths == {expected_depth}


def test_first_second_level_size_splits_174_plus_1():
    data = _data(MAX_LINKS * CH + 1)
    blocks: dict[Cid, bytes] = {}
    b = FileBuilder(sink=lambda c, blk: blocks.__setitem__(c, blk))
    b.write(data)
    root = decode_node(blocks[b.finish().cid])
    # root -> [full depth-1 node (174 leaves), depth-1 node holding the single 1-byte leaf]
    assert [len(decode_node(blocks[link.cid]).links) for link in root.links] == [174, 1]
    assert decode_unixfs(root.data).blocksizes == (MAX_LINKS * CH, 1)


# ---- streaming and deep trees --------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    chunk=st.integers(min_value=1, max_value=9),
    max_links=st.integers(min_value=2, max_value=5),
)
def test_any_write_split_and_small_parameters_match_reference(data, cuts, chunk, max_links):
    # Tiny chunks and fan-out give 3-6 level trees from a few hundred bytes.
    b = FileBuilder(chunk_size=chunk, max_links=max_links)
    pos = 0
    for c in sorted(cuts):
        b.write(data[pos:c])
        pos = max(pos, c)
    b.write(data[pos:])
    assert str(b.finish().cid) == _ref_cid(data, chunk, max_links)


def test_only_hash_emits_no_blocks_but_counts_them():
    calls = []
    data = _data(3 * CH + 5)
    with_sink = FileBuilder(sink=lambda c, blk: calls.append(c))
    with_sink.write(data)
    r1 = with_sink.finish()
    r2 = FileBuilder()
    r2.write(data)
    assert r2.finish() == r1 and len(calls) == r1.blocks == 5  # 4 leaves + root


def test_raw_leaves_tsize_is_data_length():
    data = _data(CH + 10)
    blocks: dict[Cid, bytes] = {}
    b = FileBuilder(cid_version=1, sink=lambda c, blk: blocks.__setitem__(c, blk))
    b.write(data)
    res = b.finish()
    root = decode_node(blocks[res.cid])
    assert [link.tsize for link in root.links] == [CH, 10]
    assert all(link.cid.codec == 0x55 and blocks[link.cid] == data[i * CH : (i + 1) * CH]
               for i, link in enumerate(root.links))
    assert cid_of_bytes(data, 1) == str(res.cid)
