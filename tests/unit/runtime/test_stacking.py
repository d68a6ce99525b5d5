"""Stacking units along axis 0 (docs/protocol.md 2.5) gives the same bits as one unit at a time:
every opcode on random single-op cases (Hypothesis: several independent inputs run stacked vs one by
one), both digits examples through Executor.run_units at several stack factors (remainder groups
included), and programs that must not be stacked are run one unit at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import Opcode
from gpumesh.client.core.ops.types import DType, OpDescriptor, SlotKind, SlotRef, TensorType, make_attrs
from gpumesh.client.core.program import OpEntry, Program, TensorDecl
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import ProgramBundle, load_program, load_units
from gpumesh.node.runtime.randprog import random_case, values
from gpumesh.node.runtime.stacking import (
    CONST_INPUTS,
    granule,
    op_blocker,
    pass_rows,
    stack_blocker,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name.lower())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_op_on_stacked_inputs_equals_one_by_one(op, data):
    draw = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    case = random_case(draw, op)
    d = case.desc
    const = CONST_INPUTS.get(d.opcode, ())
    if d.opcode in (Opcode.LUT, Opcode.GATHER, Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.ROPE):
        const = (1, 2)  # the table is always a weight, never stacked (stack_blocker keeps such programs per unit)
    dyn = [i for i in range(len(d.inputs)) if i not in const]
    sets = [list(case.inputs)]
    for _ in range(draw(1, 3)):  # more samples of the data inputs, same constants
        sets.append([values(draw, d.inputs[i].type.shape, d.inputs[i].type.dtype) if i in dyn else a
                     for i, a in enumerate(case.inputs)])
    one = [kernels.run_op(d, [torch.from_numpy(np.array(a)) for a in s]).numpy() for s in sets]
    stacked = [np.concatenate([s[i] for s in sets]) if i in dyn else case.inputs[i] for i in range(len(d.inputs))]
    if op_blocker(d) is not None:
        return  # not stacked by the executor (checked below that such programs run one by one)
    got = kernels.run_op(d, [torch.from_numpy(np.array(a)) for a in stacked]).numpy()
    assert np.array_equal(got, np.concatenate(one))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("stack", [1, 3, 8, 64])
def test_run_units_stacked_equals_run_unit(name, stack):
    bundle = load_program(EXAMPLES / name)
    units = load_units(EXAMPLES / "data" / f"test_inputs_{name}.safetensors", bundle.program)[:11]
    ex = Executor(bundle, stack=stack)
    want = np.stack([ex.run_unit(u) for u in units])
    assert np.array_equal(ex.run_units(units), want)
    res = ex.run(units)
    assert np.array_equal(res.outputs, want) and len(res.unit_roots) == len(units)


def test_examples_are_stacked_by_default():
    mlp = load_program(EXAMPLES / "mlp").program
    assert pass_rows(mlp) // mlp.input.type.shape[0] > 1  # several units per pass
    assert stack_blocker(load_program(EXAMPLES / "cnn").program) is None


def _program(ops: list[tuple[str, OpDescriptor]], input_t: TensorType, weights=()) -> Program:
    return Program(TensorDecl("x", input_t), tuple(weights), tuple(OpEntry(n, d, ()) for n, d in ops), {})


def test_programs_that_move_axis_0_run_one_unit_at_a_time():
    t = TensorType(DType.INT8, (3, 4))
    tr = OpDescriptor(Opcode.TRANSPOSE, (SlotRef(SlotKind.UNIT_INPUT, 0, t),), TensorType(DType.INT8, (4, 3)),
                      make_attrs(Opcode.TRANSPOSE, p0=1, p1=0, p2=2, p3=3))
    prog = _program([("t", tr)], t)
    assert "moves axis 0" in stack_blocker(prog)
    assert pass_rows(prog) == 3  # one unit (B = 3 rows) per pass
    ex = Executor(ProgramBundle(prog, {}, {}), stack=8)  # asking for stacking does not override the blocker
    assert ex.rows == 3
    units = np.random.default_rng(3).integers(-128, 128, (5, 3, 4), dtype=np.int8)
    assert np.array_equal(ex.run_units(units), np.stack([u.T for u in units]))
    flat = TensorType(DType.INT8, (12,))
    rs = OpDescriptor(Opcode.RESHAPE, (SlotRef(SlotKind.UNIT_INPUT, 0, t),), flat, ())
    am = OpDescriptor(Opcode.ARGMAX, (SlotRef(SlotKind.OP_OUTPUT, 0, flat),), TensorType(DType.INT32, (1,)), ())
    assert "rank-1" in stack_blocker(_program([("r", rs), ("a", am)], t))


def test_concat_and_slice_stack_along_axis_1_not_axis_0():
    """A KV-cache step (x [2, 3, 4] + x[:, 2:3] along axis 1) stacks and equals one unit at a time;
    the same views along axis 0 join or cut units, so such a program runs one unit per pass."""
    t = TensorType(DType.INT8, (2, 3, 4))
    u = SlotRef(SlotKind.UNIT_INPUT, 0, t)

    def views(axis: int) -> Program:
        n = t.shape[axis]
        sl_t = TensorType(DType.INT8, tuple(1 if k == axis else d for k, d in enumerate(t.shape)))
        cat_t = TensorType(DType.INT8, tuple(n + 1 if k == axis else d for k, d in enumerate(t.shape)))
        sl = OpDescriptor(Opcode.SLICE, (u,), sl_t, make_attrs(Opcode.SLICE, axis=axis, start=n - 1, len=1))
        cat = OpDescriptor(Opcode.CONCAT, (u, SlotRef(SlotKind.OP_OUTPUT, 0, sl_t)), cat_t,
                           make_attrs(Opcode.CONCAT, axis=axis))
        return _program([("s", sl), ("c", cat)], t)

    units = np.random.default_rng(5).integers(-128, 128, (9, *t.shape), dtype=np.int8)
    stacked = views(1)
    assert stack_blocker(stacked) is None and pass_rows(stacked) > t.shape[0]
    ex = Executor(ProgramBundle(stacked, {}, {}), stack=4)
    assert np.array_equal(ex.run_units(units), np.concatenate([units, units[:, :, 2:3]], axis=2))
    prog = views(0)
    assert "joins or cuts axis 0" in stack_blocker(prog)
    ex = Executor(ProgramBundle(prog, {}, {}), stack=4)
    assert ex.rows == 2
    assert np.array_equal(ex.run_units(units), np.concatenate([units, units[:, 1:2]], axis=1))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("rows", [1, 5, 33, 101])
def test_passes_of_any_rows_equal_run_unit(name, rows):
    """Passes that cut units anywhere (part of a unit, a unit and a half...) change no bit."""
    bundle = load_program(EXAMPLES / name)
    units = load_units(EXAMPLES / "data" / f"test_inputs_{name}.safetensors", bundle.program)[:7]
    ex = Executor(bundle)
    want = np.stack([ex.run_unit(u) for u in units])
    ex.rows = rows
    assert np.array_equal(ex.run_units(units), want)


def test_granule_follows_reshapes_of_axis_0():
    t = TensorType(DType.INT8, (4, 6))
    u = SlotRef(SlotKind.UNIT_INPUT, 0, t)
    to_8x3 = OpDescriptor(Opcode.RESHAPE, (u,), TensorType(DType.INT8, (8, 3)), ())
    to_3x8 = OpDescriptor(Opcode.RESHAPE, (u,), TensorType(DType.INT8, (3, 8)), ())
    assert granule(_program([("a", to_8x3)], t)) == 1  # 1 input row = 2 rows of [8, 3]
    prog = _program([("a", to_8x3), ("b", to_3x8)], t)
    assert granule(prog) == 4  # [3, 8] shares no row boundary with [4, 6] but the unit's own
    assert pass_rows(prog) % 4 == 0
    relu = OpDescriptor(Opcode.RELU, (SlotRef(SlotKind.OP_OUTPUT, 0, to_8x3.out),), to_8x3.out,
                        make_attrs(Opcode.RELU, zp=3))
    prog = _program([("a", to_8x3), ("r", relu)], t)
    bundle = ProgramBundle(prog, {}, {})
    units = np.random.default_rng(5).integers(-128, 128, (5, 4, 6), dtype=np.int8)
    ex = Executor(bundle)
    want = np.stack([ex.run_unit(x) for x in units])
    for rows in (1, 3, 4, 7):
        ex.rows = rows
        assert np.array_equal(ex.run_units(units), want)
