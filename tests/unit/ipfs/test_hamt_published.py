"""HAMT-sharded directories against CIDs that Kubo itself published.

Every expected CID here was printed by Kubo, not by this code:
- sharness t0260-sharding.sh: `testdata/file1..file2000` (each holding "$i\\n") added with sharding
  forced on (Import.UnixFSHAMTDirectorySizeThreshold = 1B), CIDv0 and --cid-version=1, and with it
  off; `ipfs resolve $SHARDED/file100`.
- test/cli/cid_profiles_test.go, profile unixfs-v0-2015 (Kubo's default): the threshold boundary,
  4096 names of 30 chars (4096 * (30 + 34) = 262144, stays flat) and 4033 names of 31 chars
  (262145, sharded). Names come from Kubo's testutils: ChaCha20 keystream (key sha256(seed), zero
  nonce) mapped onto AlphabetEasy; the flat CID proves that rebuild before the sharded one is used.
- boxo's gateway fixture directory-with-multilayer-hamt-and-multiblock-files.car (copied as
  fixtures/boxo-multilayer-hamt.car, boxo is MIT/Apache-2.0): a Go-written HAMT with collisions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gpumesh.ipfs import reader
from gpumesh.ipfs.cid import Cid, decode_varint
from gpumesh.ipfs.hamt import build_shards, murmur3_x64_128
from gpumesh.ipfs.unixfs import cid_of_bytes
from gpumesh.ipfs.unixfs_dir import HAMT_THRESHOLD, import_directory, size_estimate

_spec = importlib.util.spec_from_file_location("kubonames", Path(__file__).with_name("kubonames.py"))
kubonames = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kubonames)


def test_chacha20_rebuild_matches_rfc8439():
    # RFC 8439 section 2.3.2: key 00..1f, nonce 000000090000004a00000000, block counter 1.
    block = kubonames.chacha20_block(bytes(range(32)), 1, bytes.fromhex("000000090000004a00000000"))
    assert block[:16].hex() == "10f1e7e4d13b5915500fdd1fa32071c4"
    # The all-zero key and nonce, counter 0 (RFC 8439 appendix A.1, test vector #1).
    assert kubonames.chacha20_stream(bytes(32), 32).hex() == (
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7")


def test_murmur3_reference_vectors():
    # MurmurHash3_x64_128 with seed 0, as spaolacci/murmur3's tests list them (h1, h2).
    assert murmur3_x64_128(b"") == (0, 0)
    assert murmur3_x64_128(b"hello") == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
    assert murmur3_x64_128(b"hello, world") == (0x342FAC623A5EBC8E, 0x4CDCBC079642414D)


# -- t0260-sharding.sh ----------------------------------------------------------------------------

def test_t0260_unsharded_matches_kubo(t0260_testdata):
    assert str(import_directory(t0260_testdata).cid) == "QmavrTrQG4VhoJmantURAYuw3bowq3E2WcvP36NRQDAC1N"


def test_t0260_sharded_matches_kubo(t0260_testdata):
    assert str(import_directory(t0260_testdata, shard_threshold=1).cid) == (
        "QmSCJD1KYLhVVHqBK3YyXuoEqHt7vggyJhzoFYbT8v1XYL")
    # t0260 resolves /ipfs/$SHARDED/file100 to this file's CID.
    assert cid_of_bytes(b"100\n") == "QmZ3RfWk1u5LEGYLHA633B5TNJy3Du27K6Fny9wcxpowGS"


def test_t0260_sharded_cidv1_matches_kubo(t0260_testdata):
    assert str(import_directory(t0260_testdata, 1, shard_threshold=1).cid) == (
        "bafybeibiemewfzzdyhq2l74wrd6qj2oz42usjlktgnlqv4yfawgouaqn4u")


# -- cid_profiles_test.go, unixfs-v0-2015 (the default), threshold boundary -----------------------

def _profile_dir(root, count: int, name_len: int):
    root.mkdir()
    names = kubonames.kubo_hamt_names("hamt-unixfs-v0-2015", count, name_len)
    assert len(set(names)) == count
    for name in names:
        (root / name).write_bytes(b"x")
    return root


def test_largest_flat_directory_matches_kubo(tmp_path):
    d = _profile_dir(tmp_path / "basic", 4096, 30)
    root = import_directory(d)
    assert str(root.cid) == "QmX5GtRk3TSSEHtdrykgqm4eqMEn3n2XhfkFAis5fjyZmN"
    assert root.blocks == 4096 + 1  # one flat block: exactly at the threshold stays basic


def test_smallest_sharded_directory_matches_kubo(tmp_path):
    d = _profile_dir(tmp_path / "hamt", 4033, 31)
    x = Cid.parse(cid_of_bytes(b"x"))
    assert size_estimate([(p.name, x, 0) for p in d.iterdir()]) == HAMT_THRESHOLD + 1
    root = import_directory(d)
    assert str(root.cid) == "QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP"
    assert root.blocks > 4033 + 1  # sharded: a root shard and child shards



# -- boxo gateway/testdata/directory-with-multilayer-hamt-and-multiblock-files.car ----------------

def _car_blocks(path: Path) -> dict[Cid, bytes]:
    """CARv1 sections (varint length, CIDv1, block) of a small fixture; the header is skipped."""
    data = path.read_bytes()
    n, pos = decode_varint(data, 0)
    pos += n
    blocks: dict[Cid, bytes] = {}
    while pos < len(data):
        n, pos = decode_varint(data, pos)
        section = data[pos:pos + n]
        pos += n
        p = 0
        for _ in range(3):  # version, codec, multihash code
            _, p = decode_varint(section, p)
        length, p = decode_varint(section, p)
        blocks[Cid.from_bytes(section[:p + length])] = section[p + length:]
    return blocks


def test_boxo_multilayer_hamt_fixture_reads_and_rebuilds():
    # A HAMT written by Go (boxo), with names chosen to collide on the first level ("hamtDir" in
    # boxo's gateway/backend_car_test.go). Our reader lists it; our builder rebuilds it exactly.
    blocks = _car_blocks(Path(__file__).with_name("fixtures") / "boxo-multilayer-hamt.car")

    def fetch_many(cids):
        return (blocks[c] for c in cids if c in blocks)

    hamt_dir = Cid.parse("bafybeignui4g7l6cvqyy4t6vnbl2fjtego4ejmpcia77jhhwnksmm4bejm")
    root = Cid.parse("bafybeid3fd2xxdcd3dbj7trb433h2aqssn6xovjbwnkargjv7fuog4xjdi")
    assert reader.lookup(reader.decode(root, blocks[root]), "hamtDir", fetch_many).cid == hamt_dir
    entries = reader.list_directory(hamt_dir, fetch_many)
    assert sorted(e.name for e in entries) == [
        "exampleA", "exampleB", "exampleC-hamt-collide-exampleA-seed-52",
        "exampleD-hamt-collide-exampleB-seed-364"]
    rebuilt, _, built = build_shards([(e.name, e.cid, e.tsize) for e in entries], cid_version=1)
    assert rebuilt == hamt_dir
    assert len(built) > 1  # the collisions force child shards
    assert all(blocks[c] == b for c, b in built)
