"""The fused CPU kernels (gpumesh.node.runtime.kernels_cpu, docs/protocol.md 2.4) give exactly the
bits of the torch forms they replace and of the scalar reference (gpumesh.client.core.ops.run_op):
each case runs the op prepared with the fused kernels (`force(True)`), prepared with the torch forms
(`force(False)`), and through the reference, and the three must be byte-equal. A counting wrapper
around each kernel shows the fused run went through the kernel expected (and the torch run through
none), so no comparison passes by running one form twice.

This file: the int32 requant at and beside its pre-clamp bounds, per tensor and per channel, shifts 1
to 30, in the requant, linear (folded bias near its limit, a large W over several GEMM chunks, no
int8 GEMM), matmul (zero points, transposes, blocks of heads; matmul_small up to the int32 bound at
K = 2^15) and mul ops. test_kernels_cpu_ops.py: layernorm, softmax, threads, add, lut;
test_kernels_cpu_switch.py: the switch, an Executor per form, Hypothesis cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.intmath import INT32_MAX
from gpumesh.client.core.ops.types import Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.randprog import _case
from tests.unit.runtime.kernels_cpu_cases import (
    CPU,
    I8,
    I32,
    accs,
    both,
    forced,
    matmul_case,
    out_range,
    ref_bytes,
    ref_equal,
    scaled_requant,
    tensor_bytes,
)

# ---------------------------------------------------------------------------------------------
# 1. The int32 requant: the requant op, linear (folded bias), matmul, mul


@pytest.mark.parametrize("per_channel", [0, 1], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("shift", [1, 2, 5, 13, 22, 23, 24, 27, 30])
def test_requant_op_at_its_pre_clamp_bounds(shift, per_channel, calls):
    """The requant op (and Requant.int32_ into a strided output) on a grid of accumulators x
    channels; per channel with a different multiplier and shift on each channel."""
    rng = np.random.default_rng(10 * shift + per_channel)
    taken = 0
    for i in range(8):
        ch = int(rng.integers(2, 6))
        shifts = [int(rng.integers(max(1, shift - 4), shift + 1)) if per_channel and c else shift for c in range(ch)]
        mults = [max(1, int(rng.integers(1, (1 << s) + 1)) >> int(rng.integers(0, 6))) for s in shifts]
        mults[0] = (1 << shift, 1, mults[0])[min(i, 2)]  # m = 1, the smallest m, then random
        zp, lo, hi = out_range(rng, shift)
        if not per_channel:
            mults, shifts = [mults[0]] * ch, [shift] * ch
        acc = np.repeat(np.array(accs(rng, mults, shifts, zp, lo, hi), dtype=np.int32)[:, None], ch, axis=1)
        types, arrays = [TensorType(I32, acc.shape)], [acc]
        if per_channel:
            qp = np.array([mults, shifts], dtype=np.int32).T.copy()
            types.append(TensorType(I32, qp.shape)), arrays.append(qp)
            req = Requant(ReqMode.PER_CHANNEL, 0, 0, zp, lo, hi)
        else:
            qp, req = None, Requant(ReqMode.PER_TENSOR, mults[0], shift, zp, lo, hi)
        case = _case(Opcode.REQUANT, types, arrays, requant=req)
        with forced(True):
            r = rq.requant_of(case.desc, qp, CPU)
        form = r.pre is not None and r.i32 is not None
        taken += form
        got, _ = both(case, calls, "requant_i32", form)
        ref = run_op(case.desc, ref_bytes(case))
        assert got == ref, (mults, shifts, zp, lo, hi)
        if form:  # the in-place entry, into a strided int8 output (written through a copy)
            out = torch.empty((ch, acc.shape[0]), dtype=torch.int8).t()
            r.int32_(torch.from_numpy(acc.copy()), out=out)
            assert tensor_bytes(out) == ref
    assert taken >= (6 if shift <= 23 else 2)


@pytest.mark.parametrize("seed", range(4))
def test_linear_with_a_folded_bias_near_its_limit(seed, calls, monkeypatch):
    """Linear ops whose bias folds into the int32 requant (Requant.fold_bias: |bias| up to the fold
    limit 2^31 - 1 - 128 sum|W|), or does not (the bias added, then the requant): inputs at the int8
    extremes that drive each channel's sum to +-128 sum|W|; row blocks of a few rows with a short
    last one (small BLOCK_ELEMENTS; odd seeds: the large-W path's GEMM_ELEMENTS blocks)."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 1 if seed % 2 else 64)
    if seed % 2:  # (the torch form's requant blocks of one row: see the next test)
        monkeypatch.setattr(kernels, "BIG_WEIGHT", 100)
        monkeypatch.setattr(kernels, "GEMM_ELEMENTS", 150)
    folded = refused = 0
    for i in range(10):
        k, n = (1, 3) if i == 0 else (int(rng.integers(1, 100)), int(rng.integers(1, 12)))  # K = 1: padded to 8
        w = rng.integers(-128, 128, (n, k)).astype(np.int8)
        reach = 128 * np.abs(w.astype(np.int64)).sum(axis=1)
        limit = INT32_MAX - int(reach.max())
        scale = (0, 10**4, limit - 100, limit)[i % 4]
        b = rng.integers(-scale, scale + 1, n)
        b[0] = scale if i % 2 else -scale
        x = np.concatenate([rng.integers(-128, 128, (6, k)), np.where(w > 0, 127, -128), np.where(w > 0, -128, 127)])
        x = x.astype(np.int8)
        shift = int(rng.integers(1, 24))
        zp, lo, hi = out_range(rng, shift)
        types = [TensorType(I8, x.shape), TensorType(I8, w.shape), TensorType(I32, (n,))]
        arrays = [x, w, b.astype(np.int32)]
        if i % 3:
            qp = np.array([[max(1, int(rng.integers(1, (1 << s) + 1)) >> int(rng.integers(0, 4))), s]
                           for s in rng.integers(max(1, shift - 3), shift + 1, n).tolist()], dtype=np.int32)
            types.append(TensorType(I32, qp.shape)), arrays.append(qp)
            req = Requant(ReqMode.PER_CHANNEL, 0, 0, zp, lo, hi)
        else:
            qp, req = None, Requant(ReqMode.PER_TENSOR, int(rng.integers(1, (1 << shift) + 1)), shift, zp, lo, hi)
        x_zp = int(rng.integers(-128, 128)) if i % 5 == 4 else 0
        case = _case(Opcode.LINEAR, types, arrays, x_zp=x_zp, requant=req)
        with forced(True):
            r = rq.requant_of(case.desc, qp, CPU)
            b_eff = b - x_zp * w.astype(np.int64).sum(axis=1)
            b_eff = (b_eff + 2**31) % 2**32 - 2**31
            fold = r.fold_bias(b_eff, reach) if (reach + np.abs(b_eff) <= INT32_MAX).all() else None
        form = r.pre is not None and r.i32 is not None
        folded += fold is not None and fold[0] == "jit"
        refused += form and fold is None
        got, _ = both(case, calls, "requant_i32", form)
        ref_equal(case, got, k)
    assert folded >= 3 and refused >= 1


@pytest.mark.parametrize("mult", [1, 1 << 13], ids=["folded", "m_above_1"])
def test_large_w_linear_over_more_rows_than_one_gemm_chunk(mult, calls):
    """A linear with a large W (k * n >= BIG_WEIGHT; n = 768, GPT-2-small's width) over more rows
    than one GEMM chunk (GEMM_ELEMENTS // n = 10,922), at the real block sizes, whose chunk is not
    a whole number of requant blocks (BLOCK_ELEMENTS // n = 341 rows): a requant folded into the
    fused kernel, and one it refuses (m > 1: the bias added, then the int64 requant)."""
    rng = np.random.default_rng(mult)
    m, k, n = 10_923, 384, 768
    assert k * n >= kernels.BIG_WEIGHT and (kernels.GEMM_ELEMENTS // n) % (kernels.BLOCK_ELEMENTS // n)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    case = _case(Opcode.LINEAR, [TensorType(I8, x.shape), TensorType(I8, w.shape), TensorType(I32, (n,))],
                 [x, w, rng.integers(-5000, 5000, n).astype(np.int32)], x_zp=2,
                 requant=Requant(ReqMode.PER_TENSOR, mult, 12, 3, -120, 120))
    got, _ = both(case, calls, "requant_i32", mult == 1)
    ref_equal(case, got, k)


def test_without_the_int8_gemm(calls, monkeypatch):
    """Where torch's int8 GEMM is unavailable (`_INT_MM_OK` false: the exact float64 product), the
    fused linear requantizes the product's own new tensor, and the matmul keeps the torch loop with
    the fused requant: the same bits as the torch forms and the reference."""
    monkeypatch.setitem(kernels._INT_MM_OK, "cpu", False)
    rng = np.random.default_rng(11)
    x, w = rng.integers(-128, 128, (20, 24)).astype(np.int8), rng.integers(-128, 128, (16, 24)).astype(np.int8)
    lin = _case(Opcode.LINEAR, [TensorType(I8, x.shape), TensorType(I8, w.shape), TensorType(I32, (16,))],
                [x, w, rng.integers(-5000, 5000, 16).astype(np.int32)], x_zp=-3,
                requant=Requant(ReqMode.PER_TENSOR, 1 << 8, 18, 2, -110, 120))
    a, b = rng.integers(-128, 128, (2, 12, 16)).astype(np.int8), rng.integers(-128, 128, (2, 8, 16)).astype(np.int8)
    for case, count in ((lin, 1), (matmul_case(rng, a, b, 0, 1, -7, 9), 1)):
        got, used = both(case, calls, "requant_i32", True)
        assert used == count
        assert got == run_op(case.desc, ref_bytes(case))
    assert kernels._INT_MM_OK["cpu"] is False


def _matmul_kernel(m: int, k: int, n: int, batch: int) -> tuple[str, int]:
    """(the kernel, its calls) a CPU matmul with a per-tensor int32 requant takes: a decode step's
    few rows (M <= SMALL_M) one matmul_small call; else, with K a multiple of 8 outside the small-M
    forms, one GEMM per batch entry and one requant_i32 call per block of BLOCK_ELEMENTS // (M N)
    entries; else the torch loop, whose requant (Requant.int32_) calls requant_i32 once per block
    of entries (here one block)."""
    if m <= kernels.SMALL_M:
        return "matmul_small", 1
    blk = max(1, kernels.BLOCK_ELEMENTS // (m * n))
    return "requant_i32", -(-batch // blk) if k % 8 == 0 else 1


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("m,k,n", [(9, 8, 5), (17, 64, 9), (12, 40, 1), (10, 12, 6), (1, 1, 1), (1, 1032, 7),
                                   (3, 7, 300), (8, 64, 5), (256, 16, 256)])
def test_matmul_with_zero_points_and_transposes(m, k, n, ta, tb, calls):
    """matmul with za, zb nonzero (extremes, then random), either operand transposed, batch 2 x 3,
    through each CPU form (`_matmul_kernel`)."""
    rng = np.random.default_rng(m * k + n + 2 * ta + tb)
    lead = (2, 3)
    kernel, count = _matmul_kernel(m, k, n, 6)
    for za, zb in ((127, -128), tuple(int(v) or 5 for v in rng.integers(-128, 128, 2))):
        a = rng.integers(-128, 128, (*lead, k, m) if ta else (*lead, m, k)).astype(np.int8)
        b = rng.integers(-128, 128, (*lead, n, k) if tb else (*lead, k, n)).astype(np.int8)
        case = matmul_case(rng, a, b, ta, tb, za, zb)
        with forced(True):
            r = rq.requant_of(case.desc, None, CPU)
        assert r.pre is not None and r.i32 is not None
        got, used = both(case, calls, kernel, True)
        assert used == count
        ref_equal(case, got, k if tb else k * n)  # (untransposed, an element reads b's [K, N] slab)


@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("signs", [(-128, -128, 127, 127), (-128, 127, 127, -128)], ids=["max", "min"])
def test_small_matmul_at_the_int32_bound(signs, tb, calls):
    """matmul_small at K = 2^15 (MAX_K) with every product at +-255^2: the int32 sum reaches
    +-65,025 * 2^15, within 2^-9 of the int32 ends; and a row of zeros beside it."""
    av, bv, za, zb = signs
    k = 1 << 15
    rng = np.random.default_rng(k + tb)
    a = np.full((2, 2, k), av, dtype=np.int8)
    a[1, 1] = za  # (a - za) = 0: a zero row
    b = np.full((2, 3, k) if tb else (2, k, 3), bv, dtype=np.int8)
    case = matmul_case(rng, a, b, 0, tb, za, zb)
    got, used = both(case, calls, "matmul_small", True)
    assert used == 1
    ref_equal(case, got, k if tb else k * 3)


@pytest.mark.parametrize("block", [50, 1 << 18])
def test_mul_on_input_pairs_in_blocks(block, calls, monkeypatch):
    """mul over 64 x values (both extremes among them) x all 256 y values, zero points at and off
    the extremes; flat blocks of 50 (the kernel's vectors made per block length: 50, then the short
    last block) or one block."""
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(block)
    xv = np.concatenate([[-128, 127, 0, -1], rng.integers(-128, 128, 60)])
    a = np.repeat(xv, 256).reshape(64, 256).astype(np.int8)
    b = np.tile(np.arange(-128, 128), (64, 1)).astype(np.int8)
    for za, zb in ((-128, 127), (3, -7)):
        req = scaled_requant(rng, 255 * 255)
        t = TensorType(I8, a.shape)
        case = _case(Opcode.MUL, [t, t], [a, b], za=za, zb=zb, requant=req)
        got, used = both(case, calls, "requant_i32", True)
        assert used == -(-a.size // min(block, a.size))
        assert got == run_op(case.desc, ref_bytes(case))


# ---------------------------------------------------------------------------------------------
# 2. layernorm
