"""The shared Merkle vectors are up to date with the Python reference, and agree with a naive
second implementation written here from docs/protocol.md section 1 (full padded tree, no shortcuts)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from Crypto.Hash import keccak

from gpumesh.client.core import merkle as m

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_merkle_vectors", VECTORS / "gen_merkle_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def H(b: bytes) -> bytes:
    return keccak.new(data=b, digest_bits=256).digest()


def naive_tensor_root(data: bytes) -> bytes:
    n = 1
    while n * 1024 < len(data):
        n *= 2
    data = data + bytes(n * 1024 - len(data))
    level = [H(b"\x00" + data[i * 1024 : (i + 1) * 1024]) for i in range(n)]
    while len(level) > 1:
        level = [H(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def naive_roots_root(values: list[bytes]) -> bytes:
    n = 1
    while n < len(values):
        n *= 2
    level = values + [bytes(32)] * (n - len(values))
    while len(level) > 1:
        level = [H(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@pytest.mark.parametrize("name", ["merkle_tensor.json", "merkle_roots.json", "merkle_constants.json"])
def test_vector_files_are_up_to_date(name):
    assert (VECTORS / name).read_text() == _gen().render(name), "run tests/vectors/gen_merkle_vectors.py"


def test_tensor_vectors_agree_with_naive_tree_and_proofs_verify():
    doc = json.loads((VECTORS / "merkle_tensor.json").read_text())
    assert doc["numCases"] == len(doc["cases"]) >= 8
    for case in doc["cases"]:
        data = bytes.fromhex(case["data"][2:])
        assert len(data) == case["nbytes"]
        root = bytes.fromhex(case["root"][2:])
        assert naive_tensor_root(data) == root
        for p in case["proofs"]:
            proof = m.RangeProof(
                case["depth"], p["start"], p["end"], bytes.fromhex(p["leaves"][2:]),
                tuple(bytes.fromhex(s[2:]) for s in p["siblings"]),
            )
            assert m.verify_range(root, proof)


def test_roots_and_constants_agree_with_naive_implementation():
    doc = json.loads((VECTORS / "merkle_roots.json").read_text())
    for case in doc["cases"]:
        leaves = [bytes.fromhex(x[2:]) for x in case["leaves"]]
        values = leaves[: case["count"]]
        assert naive_roots_root(values) == bytes.fromhex(case["root"][2:])
        assert all(v == bytes(32) for v in leaves[case["count"] :])
    c = json.loads((VECTORS / "merkle_constants.json").read_text())
    z = H(b"\x00" + bytes(1024))
    for level, hexz in enumerate(c["zeroSubtree"][:6]):
        assert bytes.fromhex(hexz[2:]) == z
        assert naive_tensor_root(bytes(1024 * (1 << level))) == z or level == 0
        z = H(b"\x01" + z + z)
    r = bytes(32)
    for hexr in c["rootsZero"][:6]:
        assert bytes.fromhex(hexr[2:]) == r
        r = H(b"\x01" + r + r)
    ops_root = naive_roots_root([H(b"\x02" + bytes.fromhex(d[2:])) for d in c["descriptors"]])
    assert ops_root.hex() == c["opsRoot"][2:]
    header = b"\x03" + (1).to_bytes(4, "big") + len(c["descriptors"]).to_bytes(4, "big")
    header += c["numWeights"].to_bytes(4, "big") + ops_root
    assert H(header).hex() == c["programRoot"][2:]


@pytest.mark.parametrize("nbytes", [1, 40, 1023, 1024, 1025, 2048, 3 * 1024 + 7, 4096, 5 * 1024, 9000])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_batched_tensor_roots_equal_the_naive_tree(nbytes, count):
    """merkle.tensor_roots (the honest path's batched unit roots) == the naive tree per row, for
    full, partial and padded leaves, as bytes and as int32 rows."""
    import numpy as np

    rng = np.random.default_rng(nbytes * 10 + count)
    rows = rng.integers(0, 256, (count, nbytes), dtype=np.uint8)
    assert m.tensor_roots(rows) == [naive_tensor_root(r.tobytes()) for r in rows]
    if nbytes % 4 == 0:
        as_i32 = rows.view(np.int32).reshape(count, 2, -1) if nbytes % 8 == 0 else rows.view(np.int32)
        assert m.tensor_roots(as_i32) == [naive_tensor_root(r.tobytes()) for r in rows]


@pytest.mark.parametrize("count", [1, 2, 7, 8, 9, 63, 64, 65, 100, 129])
def test_roots_root_batched_equals_naive(count):
    values = [H(i.to_bytes(4, "big")) for i in range(count)]
    assert m.roots_root(values) == naive_roots_root(values)


def test_hash_rows_equals_keccak_row_by_row_and_rejects_bad_arrays():
    import numpy as np

    msgs = np.random.default_rng(3).integers(0, 256, (5, 200), dtype=np.uint8)
    assert [bytes(r) for r in m.hash_rows(msgs)] == [H(r.tobytes()) for r in msgs]
    assert m.hash_rows(np.zeros((0, 65), dtype=np.uint8)).shape == (0, 32)
    for bad in (msgs.astype(np.int32), msgs[:, ::2], msgs[0]):
        with pytest.raises(ValueError):
            m.hash_rows(bad)


def test_tensor_roots_in_several_batches_and_of_nothing(monkeypatch):
    import numpy as np

    rows = np.random.default_rng(5).integers(0, 256, (7, 3000), dtype=np.uint8)
    want = [naive_tensor_root(r.tobytes()) for r in rows]
    monkeypatch.setattr(m, "_BATCH_BYTES", 2 * 3 * 1025)  # two tensors of three leaves per batch
    assert m.tensor_roots(rows) == want
    assert m.tensor_roots(rows[:0]) == []


def test_batched_tensor_roots_use_the_leaf_tag(monkeypatch):
    """The batched unit roots take their leaf tag from TAG_LEAF like every other tree: with another
    tag, tensor_roots still equals tensor_root (the unit roots a worker submits cannot drift from
    the roots the game checks)."""
    import numpy as np

    rows = np.random.default_rng(5).integers(0, 256, (3, 2100), dtype=np.uint8)
    monkeypatch.setattr(m, "TAG_LEAF", b"\x07")
    monkeypatch.setattr(m, "_ZERO_SUBTREE", [])
    assert m.tensor_roots(rows) == [m.tensor_root(r.tobytes()) for r in rows]
    assert m.tensor_roots(rows)[0] != naive_tensor_root(rows[0].tobytes())  # the tag really changed
