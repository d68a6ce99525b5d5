"""The verified reader on HAMT-sharded directories: listing, lookup, get, and what it refuses.

The directory is Kubo's t0260 `testdata` (2000 files, sharded with the threshold forced to 1 byte),
whose root CID Kubo published (test_hamt_published.py); the flat form of the same files is the
independent reference for every listing. Malformed shards are re-encoded with a correct CID, so
only the structural checks can catch them.
"""

from __future__ import annotations

import pytest

from gpumesh.ipfs import reader
from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.dagpb import (
    T_HAMT_SHARD,
    PBLink,
    UnixfsData,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
)
from gpumesh.ipfs.errors import CidMismatch, IpfsError, MalformedDag, NotFound, Unsupported
from gpumesh.ipfs.hamt import build_shards
from gpumesh.ipfs.store import MemoryStore
from gpumesh.ipfs.unixfs import cid_of_bytes
from gpumesh.ipfs.unixfs_dir import import_directory

SHARDED = "QmSCJD1KYLhVVHqBK3YyXuoEqHt7vggyJhzoFYbT8v1XYL"  # Kubo, t0260


@pytest.fixture(scope="module")
def tree(t0260_testdata):
    d = t0260_testdata
    blocks: dict[Cid, bytes] = {}
    flat_blocks: dict[Cid, bytes] = {}
    root = import_directory(d, shard_threshold=1, sink=lambda c, b: blocks.__setitem__(c, b))
    flat = import_directory(d, sink=lambda c, b: flat_blocks.__setitem__(c, b))
    assert str(root.cid) == SHARDED
    return d, blocks, root.cid, flat_blocks, flat.cid


def _fetcher(blocks: dict[Cid, bytes]):
    def fetch_many(cids):
        for c in cids:
            if c not in blocks:
                return
            yield blocks[c]

    return fetch_many


def _shards(blocks):
    return [c for c, b in blocks.items() if c.codec == 0x70 and decode_unixfs(decode_node(b).data).type == 5]


def test_listing_has_every_entry_once_and_matches_the_flat_directory(tree):
    _, blocks, root, flat_blocks, flat = tree
    entries = reader.list_directory(root, _fetcher(blocks))
    assert len(entries) == 2000 == len({e.name for e in entries})
    flat_entries = reader.list_directory(flat, _fetcher(flat_blocks))
    assert sorted((e.name, e.cid, e.tsize) for e in entries) == sorted(
        (e.name, e.cid, e.tsize) for e in flat_entries)
    assert len(_shards(blocks)) > 1  # 2000 names in 256 slots: child shards exist


def test_a_path_inside_resolves_and_reads(tree):
    _, blocks, root, _, _ = tree
    fetch = _fetcher(blocks)
    # t0260: `ipfs resolve /ipfs/$SHARDED/file100` -> this CID.
    assert str(reader.resolve(f"/ipfs/{root}/file100", fetch)) == "QmZ3RfWk1u5LEGYLHA633B5TNJy3Du27K6Fny9wcxpowGS"
    assert b"".join(reader.iter_file(reader.resolve(f"{root}/file1999", fetch), fetch)) == b"1999\n"
    with pytest.raises(NotFound, match="file2001"):
        reader.resolve(f"{root}/file2001", fetch)
    with pytest.raises(IpfsError, match="is a directory"):
        list(reader.iter_file(root, fetch))


def test_lookup_reads_only_the_shards_on_the_hash_path(tree):
    _, blocks, root, _, _ = tree
    seen: list[Cid] = []

    def counting(cids):
        seen.extend(cids)
        return _fetcher(blocks)(cids)

    reader.resolve(f"{root}/file100", counting)
    shards = set(_shards(blocks))
    assert 1 <= sum(c in shards for c in seen) <= 3 < len(shards)


def test_store_get_writes_the_tree_back(tree, tmp_path):
    d, blocks, root, _, _ = tree
    store = MemoryStore()
    for c, b in blocks.items():
        store._put(c, b)
    out = store.get(str(root), tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in d.iterdir())
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in d.iterdir())
    assert store.add_path(d) != str(root)  # the default threshold keeps these 2000 names flat


def test_a_tampered_shard_is_refused(tree):
    _, blocks, root, _, _ = tree
    child = next(c for c in _shards(blocks) if c != root)
    bad = dict(blocks)
    bad[child] = blocks[child][:-1] + bytes([blocks[child][-1] ^ 1])
    with pytest.raises(CidMismatch):
        reader.list_directory(root, _fetcher(bad))
    missing = {c: b for c, b in blocks.items() if c != child}
    with pytest.raises(NotFound):
        reader.list_directory(root, _fetcher(missing))


def _rebuilt(blocks, cid, mutate):
    """`cid`'s shard re-encoded after `mutate(links, unixfs)`, under its own (correct) new CID."""
    pb = decode_node(blocks[cid])
    links, u = mutate(list(pb.links), decode_unixfs(pb.data))
    block = encode_node(links, encode_unixfs(u))
    new = Cid.of_block(block)
    return new, {**blocks, new: block}


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        # a link dropped but its bit left set
        (lambda ls, u: (ls[1:], u), MalformedDag, "bitfield marks"),
        # links out of slot order
        (lambda ls, u: ([ls[1], ls[0], *ls[2:]], u), MalformedDag, "out of order"),
        # another hash function
        (lambda ls, u: (ls, UnixfsData(T_HAMT_SHARD, u.data, hash_type=0x11, fanout=u.fanout)), Unsupported, "hash"),
        # a fanout that is not a power of two
        (lambda ls, u: (ls, UnixfsData(T_HAMT_SHARD, u.data, hash_type=u.hash_type, fanout=200)), MalformedDag,
         "fanout"),
        # a link name without its hex slot prefix
        (lambda ls, u: ([PBLink(ls[0].cid, "zz" + (ls[0].name or "")[2:], ls[0].tsize), *ls[1:]], u),
         MalformedDag, "prefix"),
    ],
)
def test_malformed_shards_are_refused(tree, mutate, error, match):
    _, blocks, root, _, _ = tree
    new, bad = _rebuilt(blocks, root, mutate)
    with pytest.raises(error, match=match):
        reader.list_directory(new, _fetcher(bad))


def test_an_entry_moved_to_another_slot_is_refused():
    # A three-entry HAMT (build_shards): its root holds the three values directly.
    x = Cid.parse(cid_of_bytes(b"x"))
    root, _, built = build_shards([("a", x, 9), ("b", x, 9), ("c", x, 9)])
    blocks = dict(built)
    assert [e.name for e in reader.list_directory(root, _fetcher(blocks))] != []

    def move(ls, u):
        # Give one value link a free slot prefix, bitfield and order updated to match.
        used = {int((lk.name or "")[:2], 16) for lk in ls}
        free = next(s for s in range(256) if s not in used)
        moved = PBLink(ls[0].cid, f"{free:02X}{ls[0].name[2:]}", ls[0].tsize)
        links = sorted([moved, *ls[1:]], key=lambda lk: lk.name[:2])
        bits = (int.from_bytes(u.data, "big") & ~(1 << int(ls[0].name[:2], 16))) | (1 << free)
        return links, UnixfsData(T_HAMT_SHARD, bits.to_bytes(32, "big").lstrip(b"\0"), hash_type=0x22, fanout=256)

    new, bad = _rebuilt(blocks, root, move)
    with pytest.raises(MalformedDag, match="wrong slot"):
        reader.list_directory(new, _fetcher(bad))
