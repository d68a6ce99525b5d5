"""The float64-integer requant form for shifts above FP64_MAX_SHIFT (requant._f53_form, docs/protocol.md
2.4): equal to the int64 formula of 2.1 at, below and above the pre-clamp bounds, at and next to
every rounding tie, at the int32 extremes, for every shift 43..62 and random multipliers, zero points
and bounds; taken where its checks pass (the 31-bit multipliers of the exporter's layernorm, shift
45), refused where a value could leave 2^53; the layernorm kernel through it (a few rows: the row
statistics in Python integers; more: in torch) equals the int64 layernorm (`kernels._layernorm`) on
random rows; and the small-M float32 matmul of decode steps equals the exact product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.randprog import _case

CPU = torch.device("cpu")


def _int64_requant(acc, mult: int, shift: int, zp: int, lo: int, hi: int) -> np.ndarray:
    return np.array([min(max(((int(a) * mult + (1 << (shift - 1))) >> shift) + zp, lo), hi) for a in acc], np.int8)


@pytest.mark.parametrize("shift", [43, 44, 45, 46, 48, 52, 55, 60, 62])
def test_f53_requant_equals_the_int64_formula(shift):
    rng = np.random.default_rng(shift)
    taken = 0
    for i in range(40):
        if i % 4 == 0:
            mult = int(rng.integers(1 << 30, 1 << 31))  # the exporter's 31-bit multipliers
        else:
            mult = int(rng.integers(1, 1 << 31)) >> int(rng.integers(0, 20)) or 1
        zp, lo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        if i % 5 == 0:
            lo, hi = -128, 127
        accs = [-(2**31), -(2**31) + 1, 2**31 - 2, 2**31 - 1, 0, 1, -1]
        b = rq.pre_clamp_bounds(mult, shift, zp, lo, hi)
        for a in b or ():
            accs += [a - 2, a - 1, a, a + 1, a + 2]
        for k in rng.integers(-200, 200, 6):
            a0 = ((2 * int(k) + 1) << (shift - 1)) // mult  # next to the tie k + 1/2
            accs += [a0 - 1, a0, a0 + 1]
        accs += rng.integers(-(2**31), 2**31, 50).tolist()
        acc = np.array([a for a in accs if -(2**31) <= a < 2**31], dtype=np.int64)
        req = rq.Requant(mult, shift, zp, lo, hi, CPU)
        assert not req.fp64
        want = _int64_requant(acc, mult, shift, zp, lo, hi)
        if req.f53 is not None:
            taken += 1
            assert np.array_equal(req.f53_(torch.from_numpy(acc).to(torch.float64)).numpy(), want)
        # every entry, whichever form it takes
        assert np.array_equal(req.int32(torch.from_numpy(acc.astype(np.int32))).numpy(), want)
        assert np.array_equal(req(torch.from_numpy(acc)).numpy(), want)
    if shift <= 45:  # above, (hi - lo + 1) * 2^shift soon leaves 2^53: mostly the int64 form
        assert taken >= 30


def test_f53_taken_and_refused():
    # the layernorm's multiplier of examples/bytegpt: shift 45, 31 bits
    assert rq.Requant(1896750708, 45, 0, -128, 127, CPU).f53 is not None
    # (hi - lo + 1) * 2^53 would not fit 53 bits: refused, the int64 form stays
    assert rq.Requant(1 << 30, 53, 0, -128, 127, CPU).f53 is None
    # m > 1 or mult 0: no pre-clamp, no f53
    assert rq.Requant(0, 45, 0, -128, 127, CPU).f53 is None
    # shifts <= 42 keep the fp64 form; per channel keeps the int64 form
    assert rq.Requant(12345, 42, 0, -128, 127, CPU).f53 is None
    assert rq.Requant(np.array([5, 6]), np.array([45, 45]), 0, -128, 127, CPU).f53 is None


@pytest.mark.parametrize("seed", range(12))
def test_layernorm_with_a_large_shift_equals_the_int64_kernel(seed, cpu_kernels):
    rng = np.random.default_rng(seed)
    d = int(rng.choice([8, 64, 256, 768]))
    rows = int(rng.choice([1, 3, 8, 40, 64, 65, 300]))
    x = rng.integers(-128, 128, (rows, d)).astype(np.int8)
    x[0] = 7  # a constant row: sigma may be 0
    g = rng.integers(-128, 128, d).astype(np.int8)
    beta = rng.integers(-(2**20), 2**20, d).astype(np.int32)
    req = Requant(ReqMode.PER_TENSOR, int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(43, 47)),
                  int(rng.integers(-20, 20)), -128, 127)
    case = _case(Opcode.LAYERNORM, [TensorType(DType.INT8, x.shape), TensorType(DType.INT8, (d,)),
                                    TensorType(DType.INT32, (d,))], [x, g, beta],
                 x_zp=int(rng.integers(-5, 5)), rms=int(rng.integers(0, 2)), eps=int(rng.integers(0, 3)), requant=req)
    got = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs])
    want = kernels._layernorm(case.desc, *(torch.from_numpy(np.array(a)) for a in case.inputs))
    assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(24))
def test_small_m_matmul_equals_the_exact_sum(seed, cpu_kernels):
    """The matmul op's forms for few rows (CPU, M <= SMALL_M: a decode step's q.K^T and P.V): the
    block-diagonal int8 GEMMs (`_grouped_int_mm`, several groups, a partial last one) and the
    float32 form (K <= F32_MAX_K; the layouts and sizes the former refuses) equal sum_k (a - za)(b -
    zb) computed in int64, for both layouts of each operand, any zero points, K up to 1,024 where all
    -128 operands make the raw partial sums reach 2^24."""
    rng = np.random.default_rng(seed)
    lead = (int(rng.choice([1, 2, 8])), int(rng.choice([1, 3, 4, 12])))  # up to 96 entries: several groups
    m, n = int(rng.integers(1, kernels.SMALL_M + 1)), int(rng.integers(1, 300))
    k = int(rng.choice([1, 7, 64, 333, kernels.F32_MAX_K]))
    ta, tb = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    za, zb = (int(v) for v in rng.integers(-128, 128, 2))
    a = rng.integers(-128, 128, (*lead, k, m) if ta else (*lead, m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (*lead, n, k) if tb else (*lead, k, n)).astype(np.int8)
    if seed % 3 == 0:
        a[:], b[:], za, zb = -128, -128, 0, 0
    case = _case(Opcode.MATMUL, [TensorType(DType.INT8, a.shape), TensorType(DType.INT8, b.shape)], [a, b],
                 ta=ta, tb=tb, za=za, zb=zb, requant=Requant())
    got = kernels.run_op(case.desc, [torch.from_numpy(a), torch.from_numpy(b)])
    a64 = (np.swapaxes(a, -1, -2) if ta else a).astype(np.int64) - za
    b64 = (np.swapaxes(b, -1, -2) if tb else b).astype(np.int64) - zb
    assert got.dtype == torch.int32 and np.array_equal(got.numpy(), a64 @ b64)


@pytest.mark.parametrize("seed", range(4))
def test_big_weight_linear_in_gemm_chunks_equals_the_int64_form(seed, monkeypatch, cpu_kernels):
    """A linear with a large W (k * n >= BIG_WEIGHT) runs its GEMM per GEMM_ELEMENTS outputs and
    its requant per BLOCK_ELEMENTS rows: the same bits as the generic int64 kernels, with chunks
    and blocks that do not divide the rows, per channel and per tensor, folded bias or not."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", int(rng.choice([1 << 9, 1 << 11])))
    monkeypatch.setattr(kernels, "GEMM_ELEMENTS", int(rng.choice([1 << 12, 1 << 14])))
    m, k, n = int(rng.integers(50, 400)), 512, 512
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    bias = rng.integers(-(2**30) if seed % 2 else -5000, 2**30 if seed % 2 else 5000, n).astype(np.int32)
    types = [TensorType(DType.INT8, x.shape), TensorType(DType.INT8, w.shape), TensorType(DType.INT32, (n,))]
    if seed < 2:
        qp = np.stack([rng.integers(1, 1 << 20, n), rng.integers(20, 24, n)], 1).astype(np.int32)
        case = _case(Opcode.LINEAR, [*types, TensorType(DType.INT32, (n, 2))], [x, w, bias, qp],
                     x_zp=int(rng.integers(-3, 3)), requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 0, -128, 127))
    else:
        case = _case(Opcode.LINEAR, types, [x, w, bias], x_zp=int(rng.integers(-3, 3)),
                     requant=Requant(ReqMode.PER_TENSOR, int(rng.integers(1, 1 << 12)), 23, 3, -100, 120))
    assert k * n >= kernels.BIG_WEIGHT
    xs = [torch.from_numpy(np.array(a)) for a in case.inputs]
    got = kernels.prepare_op(case.desc, list(case.inputs[1:]), CPU)(xs)
    assert torch.equal(got, kernels._run_generic(case.desc, xs))
