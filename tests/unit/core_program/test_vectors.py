"""tests/vectors/ops_*.json and tensor_encoding.json: up to date with gen_vectors.py, every range
proof verifies against its input root, and the hand-made edge cases hold hand-derived values."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gpumesh.client.core import merkle

VEC = Path(__file__).resolve().parents[2] / "vectors"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_vectors", VEC / "gen_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vector_files_are_up_to_date():
    g = _gen()
    for name, obj in g.generate().items():
        path = VEC / name
        assert path.is_file(), f"{name} missing: run tests/vectors/gen_vectors.py"
        assert path.read_text() == g.render(obj), f"{name} stale: run tests/vectors/gen_vectors.py"


@pytest.mark.parametrize("path", sorted(VEC.glob("ops_*.json")), ids=lambda p: p.stem)
def test_range_proofs_verify_against_input_roots(path):
    doc = json.loads(path.read_text())
    assert doc["numCases"] == len(doc["cases"]) >= 5
    for case in doc["cases"]:
        for el in case["elements"]:
            for r in el["ranges"]:
                inp = case["inputs"][r["input"]]
                leaves = bytes.fromhex(r["leaves"][2:])
                proof = merkle.RangeProof(inp["depth"], r["leafStart"], r["leafEnd"], leaves,
                                          tuple(bytes.fromhex(s[2:]) for s in r["siblings"]))
                assert merkle.verify_range(bytes.fromhex(inp["root"][2:]), proof)
                off = r["start"] - r["leafStart"] * doc["leafBytes"]
                assert leaves[off : off + r["end"] - r["start"]].hex() == r["bytes"][2:]


def _values(op: str, note_start: str) -> dict[int, int]:
    doc = json.loads((VEC / f"ops_{op}.json").read_text())
    case = next(c for c in doc["cases"] if c["note"].startswith(note_start))
    return {e["index"]: e["value"] for e in case["elements"]}


def test_edge_values_derived_by_hand():
    # requant mult=1 shift=1 of [-5,-3,-1,1,3,5,2^31-1,-2^31]: round half up, then clamp
    want = dict(enumerate([-2, -1, 0, 1, 2, 3, 127, -128]))
    got = _values("requant", "rounding ties")
    assert got and all(want[i] == v for i, v in got.items())
    # argmax [[3,7,7,-128,7],[-128]*5] -> [1, 0]
    assert _values("argmax", "ties") == {0: 1, 1: 0}
    # add ma=mb=1 shift=1 zy=100: (127+127+1)>>1=127 -> 227 -> 127; (-1+0+1)>>1=0 -> 100
    got = _values("add", "ties")
    assert got[0] == 127 and got[3] == 100
    # linear K=4096 of (-128)(-128): acc = 2^26 (+bias), x 2^30 / 2^31 = 2^25 -> saturates at 127
    assert set(_values("linear", "large K").values()) == {127}
    # bias wrap: 127*127*4096 + 2^31-1 wrapped to int32
    v = 127 * 127 * 4096 + 2**31 - 1
    assert set(_values("linear", "bias wraps").values()) == {v - 2**32}
