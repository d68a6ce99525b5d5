"""Chunked reductions (docs/protocol.md 2.2, 5.7.7): chunkmax + pairargmax give argmax's index
(first index on ties) for every chunk length, at one and two levels; chunksum + sumrequant give
avgpool's int8 result bit for bit; sumrequant's accumulator wraps like wrap32. Reference and
torch kernels both."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import Opcode, run_op
from gpumesh.client.core.ops.intmath import from_le
from gpumesh.client.core.ops.types import DType, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.randprog import _case, values

I8, I32 = DType.INT8, DType.INT32


def _both(case, xs: list[bytes]) -> bytes:
    """The op through the reference and the torch kernel; asserts they agree, returns the bytes."""
    ref = run_op(case.desc, xs)
    arrs = [np.frombuffer(b, dtype=np.int8 if s.type.dtype == I8 else "<i4").reshape(s.type.shape)
            for b, s in zip(xs, case.desc.inputs, strict=True)]
    out = kernels.run_op(case.desc, [torch.from_numpy(a.copy()) for a in arrs])
    assert np.ascontiguousarray(out.numpy()).tobytes() == ref
    return ref


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_pairargmax_of_chunkmax_is_argmax(data):
    def draw(lo, hi):
        return data.draw(st.integers(lo, hi))

    dt = DType(draw(1, 2))
    shape = (draw(1, 3), draw(1, 60))
    x = values(draw, shape, dt)
    t = TensorType(dt, shape)
    want = run_op(_case(Opcode.ARGMAX, [t], [x]).desc, [x.tobytes()])
    assert from_le(want, 4) == list(np.argmax(x, axis=1))  # numpy: first index on ties too
    c1 = _case(Opcode.CHUNKMAX, [t], [x], q=draw(1, shape[1]), pairs=0)
    pairs = _both(c1, [x.tobytes()])
    g = c1.desc.out.shape[-2]
    if draw(0, 1) and g > 1:  # a second level over the pairs
        c2 = _case(Opcode.CHUNKMAX, [c1.desc.out], [], q=draw(1, g), pairs=1)
        pairs, last = _both(c2, [pairs]), c2.desc.out
    else:
        last = c1.desc.out
    assert _both(_case(Opcode.PAIRARGMAX, [last], []), [pairs]) == want


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_sumrequant_of_chunksum_is_avgpool(data):
    def draw(lo, hi):
        return data.draw(st.integers(lo, hi))

    shape = (draw(1, 2), draw(1, 9), draw(1, 9), draw(1, 5))
    x = values(draw, shape, I8)
    t = TensorType(I8, shape)
    lo = draw(-128, 127)
    req = Requant(ReqMode.PER_TENSOR, draw(0, 2**31 - 1), draw(1, 62), draw(-128, 127), lo, draw(lo, 127))
    zp = draw(-128, 127)
    want = run_op(_case(Opcode.AVGPOOL, [t], [x], x_zp=zp, requant=req).desc, [x.tobytes()])
    c1 = _case(Opcode.CHUNKSUM, [t], [x], x_zp=zp, q=draw(1, shape[1] * shape[2]))
    sums = _both(c1, [x.tobytes()])
    assert _both(_case(Opcode.SUMREQUANT, [c1.desc.out], [], requant=req), [sums]) == want


def test_sumrequant_wraps_its_accumulator_like_wrap32():
    # 2^31-1 + 1 wraps to -2^31; requant with m = 1/2 gives -2^30 -> clamped to -128 (not 127)
    x = np.array([[2**31 - 1, 1], [-(2**31), -1]], dtype=np.int32)
    c = _case(Opcode.SUMREQUANT, [TensorType(I32, (2, 2))], [x], requant=Requant(ReqMode.PER_TENSOR, 1, 1, 0, -128, 127))
    assert from_le(_both(c, [x.tobytes()]), 1) == [-128, 127]


def test_chunkmax_ties_and_int32_extremes():
    x = np.array([[-(2**31), -(2**31), 5, 5, 2**31 - 1, 2**31 - 1, -(2**31)]], dtype=np.int32)
    c = _case(Opcode.CHUNKMAX, [TensorType(I32, x.shape)], [x], q=2, pairs=0)
    out = from_le(_both(c, [x.tobytes()]), 4)
    assert out == [-(2**31), 0, 5, 2, 2**31 - 1, 4, -(2**31), 6]
