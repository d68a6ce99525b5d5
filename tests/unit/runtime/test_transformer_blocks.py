"""The prepared CPU kernels of the transformer ops (docs/protocol.md 2.3) cut their work into row
or head blocks of `kernels.BLOCK_ELEMENTS`; the random single-op cases of
test_executor_vs_reference are too small to span two blocks. Here the block size is made tiny, so
every case runs as many blocks (softmax blocks that hold whole groups of R rows, blocks that cut a
group, a short last block; matmul head blocks; layernorm row blocks; mul flat blocks), and the
output must still equal the scalar reference on every element. Plus the matmul zero-point
correction at the int32 extremes (K = MAX_K)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import Opcode, run_op
from gpumesh.client.core.ops.types import DType, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.randprog import _case, random_case


def _check(case) -> None:
    ref = run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs])
    out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs])
    assert np.ascontiguousarray(out.numpy()).tobytes() == ref


@pytest.mark.parametrize("op", [Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.MATMUL, Opcode.MUL, Opcode.LUT],
                         ids=lambda o: o.name.lower())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_blocked_kernels_equal_reference(op, data, monkeypatch):
    draw = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", draw(1, 200))
    _check(random_case(draw, op, max_dim=8))


@pytest.mark.parametrize("causal,off", [(0, 0), (1, 0), (1, 5), (1, 2**32 - 1)])
@pytest.mark.parametrize("block", [1, 7, 64, 96, 1 << 18])
def test_softmax_blocks_over_heads(causal, off, block, monkeypatch):
    """3 x 4 heads of [8, 12] logits: blocks of whole heads (64, 96), blocks cutting heads (1, 7),
    one block (2^18); the causal pattern follows each flat row's query position."""
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(block + causal + off)
    x = rng.integers(-128, 128, (3, 4, 8, 12)).astype(np.int8)
    x[0, 0] = -128  # a row group of equal values
    table = np.round(32768 * np.exp(-np.arange(256) / 20)).astype(np.int32)
    _check(_case(Opcode.SOFTMAX, [TensorType(DType.INT8, x.shape), TensorType(DType.INT32, (256,))], [x, table],
                 causal=causal, off=off))


@pytest.mark.parametrize("za,zb", [(127, 127), (127, -128), (-128, 127), (-128, -128), (0, 127), (127, 0)])
def test_matmul_zero_points_at_max_k(za, zb):
    """K = MAX_K = 32,768 with the operands at the corner that drives A.B + R (and the whole sum) to
    its largest magnitude: the result is the exact int32 accumulator, up to 65,025 * K."""
    k = 1 << 15
    a = np.full((2, 2, k), -128 if za >= 0 else 127, dtype=np.int8)
    b = np.full((2, 3, k), -128 if zb >= 0 else 127, dtype=np.int8)
    a[1, 1, ::3] = 0  # a second row with other sums
    _check(_case(Opcode.MATMUL, [TensorType(DType.INT8, a.shape), TensorType(DType.INT8, b.shape)], [a, b],
                 ta=0, tb=1, za=za, zb=zb, requant=Requant()))


def test_layernorm_beta_that_can_wrap_takes_the_int64_form():
    """beta near -2^31: z * gamma + beta can leave int32, so the kernel keeps the int64 form with
    its explicit wrap32 (the float64 form is taken only where no wrap is possible)."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (5, 64)).astype(np.int8)
    gamma = np.full(64, 127, dtype=np.int8)
    beta = np.full(64, -(2**31) + 5, dtype=np.int32)
    _check(_case(Opcode.LAYERNORM, [TensorType(DType.INT8, x.shape), TensorType(DType.INT8, (64,)),
                                    TensorType(DType.INT32, (64,))], [x, gamma, beta], x_zp=3, rms=0, eps=1,
                 requant=Requant(ReqMode.PER_TENSOR, 1 << 20, 30, 0, -128, 127)))


@pytest.mark.parametrize("ta,tb", [(1, 0), (1, 1), (0, 0)])
def test_matmul_single_row_operand_views(ta, tb):
    """M = 1 or N = 1 operands reached as transposed views: a [K, 1] view read as [1, K] has
    strides (1, 1), which torch's CPU `_int_mm` misreads (torch 2.13); the kernel copies such an
    operand to row-major strides first. Batches of 1 and 3 (stacked units)."""
    rng = np.random.default_rng(11)
    for batch in (1, 3):
        a = rng.integers(-128, 128, (batch, 8, 1) if ta else (batch, 1, 8)).astype(np.int8)
        b = rng.integers(-128, 128, (batch, 1, 8) if tb else (batch, 8, 1)).astype(np.int8)
        _check(_case(Opcode.MATMUL, [TensorType(DType.INT8, a.shape), TensorType(DType.INT8, b.shape)], [a, b],
                     ta=ta, tb=tb, za=-3, zb=4, requant=Requant()))


@pytest.mark.parametrize("dd", [1024, 1025])
@pytest.mark.parametrize("rms", [0, 1])
def test_layernorm_row_sums_on_both_sides_of_the_float32_bound(dd, rms):
    """Rows of D = 1024 (the row sums in float32, exact up to there) and 1025 (in float64), with
    extreme rows (all -128: the largest sum of squares; all 127; one outlier) and x_zp = 127."""
    rng = np.random.default_rng(dd + rms)
    x = rng.integers(-128, 128, (4, dd)).astype(np.int8)
    x[0], x[1] = -128, 127
    x[2, :] = -128
    x[2, 5] = 127
    gamma = rng.integers(-128, 128, dd).astype(np.int8)
    beta = rng.integers(-(2**20), 2**20, dd).astype(np.int32)
    _check(_case(Opcode.LAYERNORM, [TensorType(DType.INT8, x.shape), TensorType(DType.INT8, (dd,)),
                                    TensorType(DType.INT32, (dd,))], [x, gamma, beta], x_zp=127, rms=rms, eps=3,
                 requant=Requant(ReqMode.PER_TENSOR, 1 << 14, 27, 0, -128, 127)))


def test_linear_on_a_single_row_view():
    """A linear whose [1, K] input is a transposed [K, 1] tensor (what a transpose op makes of a
    one-column output: `contiguous()` keeps its strides (1, 1)): the GEMM reads it row-major."""
    rng = np.random.default_rng(12)
    w = rng.integers(-128, 128, (3, 8)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 3).astype(np.int32)
    col = rng.integers(-128, 128, (8, 1)).astype(np.int8)
    case = _case(Opcode.LINEAR, [TensorType(DType.INT8, (1, 8)), TensorType(DType.INT8, w.shape),
                                 TensorType(DType.INT32, (3,))], [col.T.copy(), w, bias], x_zp=2, requant=Requant())
    ref = run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs])
    view = torch.from_numpy(col).permute(1, 0).contiguous()
    assert view.stride() == (1, 1)
    out = kernels.run_op(case.desc, [view, torch.from_numpy(w), torch.from_numpy(bias)])
    assert np.ascontiguousarray(out.numpy()).tobytes() == ref
    assert kernels.int_matmul(view, torch.from_numpy(w)).tolist() == (col.T.astype(np.int32) @ w.T.astype(np.int32)).tolist()
