"""Positions in the integer transformer op set (docs/protocol.md 2.2.3): rope (opcode 0x15) against
the float rotation it stands for, its closed forms and position offsets; and learned positional
embeddings, which need no op of their own: a gather of position ids held as an int32 weight from a
[P, D] table, then an add, runs through the Executor and every element of it is proven
(trace.element_proof: Merkle-opened bytes recompute the executor's value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.client.core import merkle
from gpumesh.client.core.ops import compute_element, run_op
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, SlotKind, TensorType
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, save_program
from gpumesh.node.runtime.randprog import _case, rope_table
from gpumesh.node.runtime.trace import element_proof

I8, I32 = DType.INT8, DType.INT32


def _rope(x: np.ndarray, table: np.ndarray, off: int, x_zp: int = 0, req: Requant | None = None) -> np.ndarray:
    req = req or Requant(ReqMode.PER_TENSOR, 1, 15, 0, -128, 127)  # y = round(acc / 2^15)
    case = _case(Opcode.ROPE, [TensorType(I8, x.shape), TensorType(I32, table.shape)],
                 [x.astype(np.int8), table.astype(np.int32)], x_zp=x_zp, off=off, requant=req)
    ref = run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs])
    out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs]).numpy()
    assert out.tobytes() == ref
    return out


@pytest.mark.parametrize("off", [0, 7, 4000])
def test_rope_is_the_float_rotation_within_one_step_of_rounding(off):
    t, dd = 16, 64
    rng = np.random.default_rng(off)
    x = rng.integers(-100, 101, (2, t, dd))
    tab = rope_table(t + off, dd)
    y = _rope(x, tab, off)
    ang = (np.arange(t)[:, None] + off) * 10000.0 ** (-2.0 * np.arange(dd // 2) / dd)
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., : dd // 2], x[..., dd // 2 :]
    want = np.concatenate([a * c - b * s, b * c + a * s], axis=-1)  # Llama's rotate_half
    # table rounding (|a| + |b|) * 2^-16 < 0.004 plus the requant's half: never a whole step
    assert np.abs(y - np.clip(want, -128, 127)).max() <= 0.51


def test_rope_closed_forms_and_clamped_table():
    x = np.array([[127] * 4 + [-128] * 4])  # a = 127, b = -128 in every pair
    one = np.array([[[2**15, 0]] * 4])  # cos 1, sin 0: the identity
    assert _rope(x, one, 0).tolist() == x.tolist()
    quarter = np.array([[[0, 2**15]] * 4])  # 90 degrees: (a, b) -> (-b, a), -(-128) saturates
    assert _rope(x, quarter, 0).tolist() == [[127] * 4 + [127] * 4]
    # entries beyond +-2^15 are clamped: int32 max acts as 2^15, int32 min as -2^15
    junk = np.array([[[2**31 - 1, -(2**31)]] * 4])
    assert _rope(x, junk, 0).tolist() == _rope(x, np.array([[[2**15, -(2**15)]] * 4]), 0).tolist()


def test_rope_offset_and_stacked_rows_keep_their_positions():
    t, dd, off = 4, 8, 3
    rng = np.random.default_rng(5)
    tab = rope_table(t + off + 2, dd)
    x = rng.integers(-128, 128, (3, t, dd))
    y = _rope(x, tab, off)
    # row t of each [T, D] block is rotated at position t + off, wherever the block sits
    for u in range(3):
        assert np.array_equal(y[u], _rope(x[u], tab, off))
    # the same row at a different offset is a different rotation
    assert not np.array_equal(_rope(x[0], tab, off), _rope(x[0], tab, off + 1))


T, D, P, OFF = 6, 40, 32, 9


def _learned_program():
    """x (token embeddings, int8 [T, D]) + pos_emb[pos_ids]: a gather whose ids are an int32 weight
    (positions OFF .. OFF + T - 1, e.g. after a KV cache of OFF tokens), then an add."""
    req = {"za": 0, "zb": 0, "ma": 1 << 19, "mb": 1 << 19, "shift": 20, "zy": 0, "lo": -128, "hi": 127}
    return from_json({
        "format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": [T, D]},
        "weights": [{"name": "pos_ids", "dtype": "int32", "shape": [T]},
                    {"name": "pos_emb", "dtype": "int8", "shape": [P, D]}],
        "ops": [{"name": "pe", "op": "gather", "inputs": ["pos_ids", "pos_emb"],
                 "out": {"dtype": "int8", "shape": [T, D]}, "attrs": {}},
                {"name": "y", "op": "add", "inputs": ["x", "pe"], "out": {"dtype": "int8", "shape": [T, D]},
                 "attrs": req}]})


def test_learned_positions_are_gather_of_a_weight_then_add_and_prove(tmp_path):
    rng = np.random.default_rng(21)
    prog = _learned_program()
    assert prog.ops[0].desc.inputs[0].kind == SlotKind.WEIGHT  # the ids are committed with the program
    emb = rng.integers(-128, 128, (P, D)).astype(np.int8)
    weights = {"pos_ids": np.arange(OFF, OFF + T, dtype=np.int32), "pos_emb": emb}
    save_program(tmp_path, prog, weights)
    bundle = load_program(tmp_path)
    ex = Executor(bundle)
    units = rng.integers(-128, 128, (3, T, D)).astype(np.int8)
    got = ex.run_units(units)
    for u in range(3):  # the float meaning: (x + pos_emb[OFF + t]) / 2, rounded half up, per row t
        want = np.floor((units[u].astype(np.int64) + emb[OFF : OFF + T]) / 2 + 0.5)
        assert np.array_equal(got[u], np.clip(want, -128, 127))
    tr = ex.trace(units[1])
    roots = [merkle.tensor_root(u.tobytes()) for u in units]
    for j, op in enumerate(prog.ops):
        for e in range(op.desc.out.count):  # every element of both ops
            p = element_proof(bundle, tr, j, e, unit_input_roots=roots, unit_index=1)
            assert p.value == int(np.frombuffer(tr.outputs[j], dtype=np.int8)[e])
            chunks = []
            for o in p.openings:
                assert merkle.verify_range(o.slot_root, o.proof)
                off = o.proof.start * merkle.LEAF_BYTES
                chunks.append(o.proof.leaves[o.range.start - off : o.range.end - off])
            assert compute_element(op.desc, e, chunks) == p.value
        if j == 0:  # gather opened the id, then the one table byte it selects
            assert [o.range.input for o in p.openings] == [0, 1]


def test_row_positions_along_axis_0_are_not_stacked():
    """rope and causal softmax take a row's position from its index along axis -2: with rank 2 that
    is axis 0, which a pass of stacked units may cut inside a unit, so such ops are not stacked."""
    from gpumesh.node.runtime.randprog import exp_table
    from gpumesh.node.runtime.stacking import op_blocker

    req = Requant(ReqMode.PER_TENSOR, 1, 15, 0, -128, 127)
    for shape, blocked in (((4, 8), True), ((2, 4, 8), False)):
        tab = TensorType(I32, (4, 4, 2))
        rope = _case(Opcode.ROPE, [TensorType(I8, shape), tab], [], x_zp=0, off=0, requant=req)
        assert (op_blocker(rope.desc) is not None) == blocked
        for causal in (0, 1):
            sm = _case(Opcode.SOFTMAX, [TensorType(I8, shape), TensorType(I32, (256,))], [exp_table(0.1)],
                       causal=causal, off=0)
            assert (op_blocker(sm.desc) is not None) == (blocked and causal == 1)


@pytest.mark.parametrize("heads", [0, 3])
def test_rope_program_stacks_over_heads_and_keeps_positions(tmp_path, heads):
    """rope's table is a prepared constant: a program with rope over [H, T, D] stacks its units (rows
    of axis 0 are whole [T, D] blocks) and equals the reference unit by unit; over [T, D] (axis 0 is
    the position) it runs unit by unit."""
    from gpumesh.node.runtime.stacking import stack_blocker

    t, dd, off = 5, 8, 3
    shape = [heads, t, dd] if heads else [t, dd]
    prog = from_json({
        "format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": shape},
        "weights": [{"name": "cs", "dtype": "int32", "shape": [t + off, dd // 2, 2]}],
        "ops": [{"name": "y", "op": "rope", "inputs": ["x", "cs"], "out": {"dtype": "int8", "shape": shape},
                 "attrs": {"x_zp": 1, "off": off, "requant": {"mode": "per_tensor", "mult": 1, "shift": 15, "zp": 0,
                                                            "lo": -128, "hi": 127}}}]})
    assert (stack_blocker(prog) is None) == bool(heads)
    tab = rope_table(t + off, dd)
    save_program(tmp_path, prog, {"cs": tab})
    ex = Executor(load_program(tmp_path), stack=4)
    units = np.random.default_rng(9).integers(-128, 128, (7, *shape)).astype(np.int8)
    got = ex.run_units(units)
    for u in range(7):
        ref = run_op(prog.ops[0].desc, [units[u].tobytes(), tab.tobytes()])
        assert got[u].tobytes() == ref
