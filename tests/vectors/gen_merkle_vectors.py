"""Generate tests/vectors/merkle_*.json from the Python reference (gpumesh.client.core.merkle).

The forge tests in contracts/test/dispute/LibMerkle.t.sol read these files, and
tests/unit/dispute/test_merkle_vectors.py checks they are up to date and that the Python verifies
each proof. Run: .venv/bin/python tests/vectors/gen_merkle_vectors.py
Data is deterministic (a keccak counter stream), so regeneration is byte-stable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpumesh.client.core import merkle as m
from gpumesh.client.core.constants import LEAF_BYTES, PROGRAM_VERSION

HERE = Path(__file__).resolve().parent

# Byte lengths around the leaf boundaries and padding cases (empty, partial leaf, several leaves).
TENSOR_SIZES = (0, 1, 1023, 1024, 1025, 2048, 3000, 5121, 8192)
ROOTS_COUNTS = (1, 2, 3, 5, 8, 9)


def stream(seed: bytes, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += m.keccak256(seed + i.to_bytes(4, "big"))
        i += 1
    return out[:n]


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def ranges_for(leaves: int) -> list[tuple[int, int]]:
    """Every single leaf, the whole tree, and some interior ranges (deduplicated, sorted)."""
    out = {(i, i + 1) for i in range(leaves)} | {(0, leaves)}
    if leaves >= 4:
        out |= {(1, 3), (1, leaves - 1), (leaves // 2 - 1, leaves // 2 + 1)}
    if leaves >= 8:
        out |= {(3, 6), (2, 7)}
    return sorted(out)


def tensor_vectors() -> dict:
    cases = []
    for size in TENSOR_SIZES:
        data = stream(b"tensor" + size.to_bytes(4, "big"), size)
        levels = m.tensor_levels(data)
        depth = len(levels) - 1
        proofs = []
        for a, b in ranges_for(1 << depth):
            p = m.range_proof(data, a, b, levels)
            proofs.append({"start": a, "end": b, "leaves": hx(p.leaves), "siblings": [hx(s) for s in p.siblings]})
        cases.append(
            {
                "nbytes": size,
                "data": hx(data),
                "depth": depth,
                "root": hx(levels[-1][0]),
                "numProofs": len(proofs),
                "proofs": proofs,
            }
        )
    return {"leafBytes": LEAF_BYTES, "numCases": len(cases), "cases": cases}


def roots_vectors() -> dict:
    cases = []
    for n in ROOTS_COUNTS:
        values = [m.keccak256(b"value" + bytes([n, i])) for i in range(n)]
        levels = m.roots_levels(values)
        depth = len(levels) - 1
        proofs = [
            [hx(s) for s in m.inclusion_proof(levels, i, m.roots_zero)] for i in range(1 << depth)
        ]
        leaves = [hx(values[i]) if i < n else hx(bytes(32)) for i in range(1 << depth)]
        cases.append(
            {"count": n, "depth": depth, "root": hx(levels[-1][0]), "leaves": leaves, "proofs": proofs}
        )
    return {"numCases": len(cases), "cases": cases}


def constants_vectors() -> dict:
    levels = range(0, 41)
    descs = [stream(b"desc" + bytes([i]), 7 + 13 * i) for i in range(5)]
    op_leaves = [m.op_leaf(d) for d in descs]
    ops_root = m.roots_root(op_leaves)
    weights = [m.tensor_root(stream(b"w" + bytes([i]), 100 * i + 1)) for i in range(3)]
    units = [m.tensor_root(stream(b"u" + bytes([i]), 1500)) for i in range(3)]
    return {
        "leafBytes": LEAF_BYTES,
        "programVersion": PROGRAM_VERSION,
        "zeroSubtree": [hx(m.zero_subtree(i)) for i in levels],
        "rootsZero": [hx(m.roots_zero(i)) for i in levels],
        "depthFor": [[c, m.depth_for(c)] for c in (0, 1, 2, 3, 4, 5, 1023, 1024, 1025, 65536, 65537)],
        "tensorDepth": [[c, m.tensor_depth(c)] for c in (0, 1, 1024, 1025, 4096, 4097, 67108864)],
        "descriptors": [hx(d) for d in descs],
        "opLeaves": [hx(x) for x in op_leaves],
        "opsRoot": hx(ops_root),
        "programRoot": hx(m.program_root(PROGRAM_VERSION, len(descs), len(weights), ops_root)),
        "numWeights": len(weights),
        "weightsRoot": hx(m.roots_root(weights)),
        "unitInputsRoot": hx(m.roots_root(units)),
        "inputsRoot": hx(m.inputs_root(weights, units)),
    }


FILES = {
    "merkle_tensor.json": tensor_vectors,
    "merkle_roots.json": roots_vectors,
    "merkle_constants.json": constants_vectors,
}


def render(name: str) -> str:
    return json.dumps(FILES[name](), indent=1) + "\n"


def main() -> int:
    for name in FILES:
        (HERE / name).write_text(render(name))
        print(f"wrote tests/vectors/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
