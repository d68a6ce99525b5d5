"""The honest path's pooled form (docs/protocol.md 2.4): a linear + requant whose only reader is a
maxpool without padding pools its int32 accumulators and requantizes after the pool. Its output must
equal the per-op form (the spec) bit for bit: Hypothesis over random NHWC linears (per-tensor and
per-channel requant, any multipliers, shifts, zero points and bounds) and random pooling windows;
the digits CNN (which has such a pair) through the executor against its own per-op trace; and a
faulty test executor keeps the per-op form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import Opcode
from gpumesh.client.core.ops.rules import expected_out
from gpumesh.client.core.ops.types import (
    DType,
    OpDescriptor,
    ReqMode,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import _UNIT, Executor
from gpumesh.node.runtime.files import load_program, load_units
from gpumesh.node.runtime.randprog import qp_rows, requant_params, values
from gpumesh.node.worker.faults import Fault, executor_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"


def _desc(op, slots, attrs, out=None):
    placeholder = OpDescriptor(op, slots, out or TensorType(DType.INT8, (1,)), attrs)
    return OpDescriptor(op, slots, out or expected_out(placeholder), attrs)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pooled_form_equals_per_op_form(data):
    draw = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    n, h, w, k, c = draw(1, 3), draw(1, 7), draw(1, 7), draw(1, 40), draw(1, 9)
    mode = ReqMode(draw(1, 2))
    x_t, w_t, b_t = TensorType(DType.INT8, (n, h, w, k)), TensorType(DType.INT8, (c, k)), TensorType(DType.INT32, (c,))
    slots = [SlotRef(SlotKind.UNIT_INPUT, 0, x_t), SlotRef(SlotKind.WEIGHT, 0, w_t), SlotRef(SlotKind.WEIGHT, 1, b_t)]
    consts = [values(draw, w_t.shape, DType.INT8), values(draw, b_t.shape, DType.INT32)]
    if mode == ReqMode.PER_CHANNEL:
        slots.append(SlotRef(SlotKind.WEIGHT, 2, TensorType(DType.INT32, (c, 2))))
        consts.append(qp_rows(draw, c))
    lin = _desc(Opcode.LINEAR, tuple(slots), make_attrs(Opcode.LINEAR, x_zp=draw(-128, 127),
                                                         requant=requant_params(draw, mode)))
    kh, kw = draw(1, h), draw(1, w)
    pool = _desc(Opcode.MAXPOOL, (SlotRef(SlotKind.OP_OUTPUT, 0, lin.out),),
                 make_attrs(Opcode.MAXPOOL, kh=kh, kw=kw, sh=draw(1, 3), sw=draw(1, 3), ph=0, pw=0))
    assert kernels.poolable(lin, pool)
    x = torch.from_numpy(values(draw, x_t.shape, DType.INT8))
    cpu = torch.device("cpu")
    want = kernels.prepare_op(pool, [], cpu)([kernels.prepare_op(lin, consts, cpu)([x])])
    block = kernels.BLOCK_ELEMENTS
    try:  # one sample per block, or the whole batch in one
        kernels.BLOCK_ELEMENTS = 1 if draw(0, 1) else block
        passthrough, fused = kernels.prepare_pooled(lin, pool, consts, cpu)
    finally:
        kernels.BLOCK_ELEMENTS = block
    got = fused([passthrough([x])])
    assert got.dtype == torch.int8 and torch.equal(got, want)


def test_padded_pool_or_plain_linear_is_not_pooled():
    t = TensorType(DType.INT8, (1, 4, 4, 2))
    lin = OpDescriptor(Opcode.LINEAR, (), t, make_attrs(Opcode.LINEAR, x_zp=0, requant=requant_params(lambda a, b: a, ReqMode.NONE)))
    pool = OpDescriptor(Opcode.MAXPOOL, (), t, make_attrs(Opcode.MAXPOOL, kh=2, kw=2, sh=1, sw=1, ph=1, pw=0))
    assert not kernels.poolable(lin, pool)  # no requant to move, and the pool pads


def test_digits_cnn_pooled_honest_path_equals_its_trace():
    bundle = load_program(EXAMPLES / "cnn")
    units = load_units(EXAMPLES / "data" / "test_inputs_cnn.safetensors", bundle.program)[:6]
    ex = Executor(bundle)
    assert ex.pooled  # conv2 -> maxpool is pooled
    for u in units:
        tr = ex.trace(u)
        outs: list = []
        with torch.inference_mode():  # the honest plan, every output kept
            for fn, srcs in ex._honest:
                outs.append(fn([torch.from_numpy(np.array(u)) if s is _UNIT else outs[s] if isinstance(s, int) else s
                                for s in srcs]))
        for j, o in enumerate(outs):
            if j not in ex.pooled:  # a pooled linear's entry passes its input on instead
                assert np.ascontiguousarray(o.numpy()).tobytes() == tr.outputs[j], bundle.program.ops[j].name
        assert np.array_equal(ex.run_unit(u), outs[-1].numpy())
    assert not executor_for(bundle, "cpu", Fault(unit=0, op=ex.pooled[0], element=0)).pooled


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_row_blocks_change_no_bit(name, monkeypatch):
    """Linear ops (and pooled pairs) run in row (sample) blocks on CPU once they are large: with a
    tiny block size every op output of a trace and every unit output equal the unblocked run."""
    bundle = load_program(EXAMPLES / name)
    units = load_units(EXAMPLES / "data" / f"test_inputs_{name}.safetensors", bundle.program)[:5]
    plain = Executor(bundle)
    want_trace, want = plain.trace(units[1]).outputs, plain.run_units(units)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 64)
    ex = Executor(bundle)
    assert ex.trace(units[1]).outputs == want_trace
    assert np.array_equal(ex.run_units(units), want)
