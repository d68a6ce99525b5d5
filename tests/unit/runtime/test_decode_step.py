"""A decode step with a KV cache composes (examples/attention/decode.py): the step's output is bit for
bit the last row of the full causal attention block (examples/attention, T = 16) on the same
inputs, steps chained on their own committed caches (K' = concat(K, k_new) of one step is the next
step's K) reproduce every later row, and every element of every op of a step is proven from
committed bytes (trace.element_proof: Merkle ranges + the scalar reference)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from examples.attention.decode import decode_program_json, step_input
from gpumesh.client.core import merkle
from gpumesh.client.core.ops import Opcode, compute_element
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import NP_DTYPE, load_program, load_units, save_program
from gpumesh.node.runtime.stacking import stack_blocker
from gpumesh.node.runtime.trace import element_proof, opened_bytes

ATTENTION = Path(__file__).resolve().parents[3] / "examples" / "attention"
T, D = 16, 64


@pytest.fixture(scope="module")
def full():
    """The committed block (T = 16), its units and the honest traces of two of them."""
    bundle = load_program(ATTENTION)
    units = load_units(ATTENTION / "inputs.safetensors", bundle.program)[:2]
    ex = Executor(bundle)
    return bundle, units, [ex.trace(u) for u in units]


def _out(trace, prog, name: str) -> np.ndarray:
    j = next(i for i, op in enumerate(prog.ops) if op.name == name)
    t = prog.ops[j].desc.out
    return np.frombuffer(trace.outputs[j], dtype=NP_DTYPE[t.dtype]).reshape(t.shape)


def _step_bundle(tmp_path: Path, full_bundle, p: int):
    prog = from_json(decode_program_json(p))
    save_program(tmp_path / f"step{p}", prog, full_bundle.weight_arrays)
    return load_program(tmp_path / f"step{p}")


def test_chained_decode_steps_equal_the_full_block_row_by_row(tmp_path, full):
    """Prefill 8 positions from the full block's k and v rows, then 8 decode steps, each fed the
    previous step's committed K' and V' (op outputs 'kk', 'vv') and the next position's x: every
    step's output is row P of the full block's output, and K' is the full block's k rows 0..P."""
    bundle, units, traces = full
    prog = bundle.program
    for u, tr in enumerate(traces):
        x, k, v, y = units[u].reshape(T, D), _out(tr, prog, "k"), _out(tr, prog, "v"), _out(tr, prog, "y")
        kc, vc = k[:8], v[:8]
        for p in range(8, T):
            step = _step_bundle(tmp_path, bundle, p)
            assert "joins or cuts axis 0" in stack_blocker(step.program)  # slices of axis 0: one unit per pass
            st = Executor(step).trace(step_input(x[p], kc, vc))
            got = _out(st, step.program, "y")
            assert np.array_equal(got, y[p : p + 1]), (u, p)
            kc, vc = _out(st, step.program, "kk"), _out(st, step.program, "vv")
            assert np.array_equal(kc, k[: p + 1]) and np.array_equal(vc, v[: p + 1])


def test_every_element_of_a_decode_step_is_proven(tmp_path, full):
    """P = 15: every element of every op (slices, the concats that grow the cache, softmax over 16
    with offset 15, ...) from Merkle range proofs of committed bytes and the scalar reference."""
    bundle, units, traces = full
    k, v = _out(traces[1], bundle.program, "k"), _out(traces[1], bundle.program, "v")
    step = _step_bundle(tmp_path, bundle, T - 1)
    prog = step.program
    unit = step_input(units[1].reshape(T, D)[T - 1], k[: T - 1], v[: T - 1])
    tr = Executor(step).trace(unit)
    roots = [merkle.tensor_root(unit.tobytes())]
    kinds = set()
    for j, op in enumerate(prog.ops):
        dt = NP_DTYPE[op.desc.out.dtype]
        vals = np.frombuffer(tr.outputs[j], dtype=dt)
        for e in range(op.desc.out.count):
            p = element_proof(step, tr, j, e, unit_input_roots=roots, unit_index=0)
            assert p.value == int(vals[e])
            assert compute_element(op.desc, e, opened_bytes(p)) == p.value
            if op.desc.opcode == Opcode.CONCAT:  # one element of ONE input: the cache or the new row
                (o,) = p.openings
                assert o.range.input == (0 if e < (T - 1) * D else 1)
            kinds.add(op.desc.opcode)
    assert {Opcode.SLICE, Opcode.CONCAT, Opcode.SOFTMAX, Opcode.MATMUL} <= kinds
    # a cache byte changed under its proof is caught (the last element of K': the new k row)
    p = element_proof(step, tr, 7, T * D - 1, unit_input_roots=roots)
    (o,) = p.openings
    bad = bytearray(o.proof.leaves)
    bad[o.range.start - o.proof.start * merkle.LEAF_BYTES] ^= 1
    forged = replace(p, openings=(replace(o, proof=replace(o.proof, leaves=bytes(bad))),))
    with pytest.raises(ValueError, match="range proof of input 1 fails"):
        opened_bytes(forged)
