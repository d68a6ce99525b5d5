"""The fused CPU kernels (gpumesh.node.runtime.kernels_cpu, docs/protocol.md 2.4) give exactly the
bits of the torch forms they replace and of the scalar reference (gpumesh.client.core.ops.run_op):
each case runs the op prepared with the fused kernels (`force(True)`), prepared with the torch forms
(`force(False)`), and through the reference, and the three must be byte-equal. A counting wrapper
around each kernel shows the fused run went through the kernel expected (and the torch run through
none), so no comparison passes by running one form twice.

Cases: the int32 requant at and beside its pre-clamp bounds, per tensor and per channel, shifts 1 to
30, in the requant, linear (folded bias near its limit, a large W over several GEMM chunks, no int8
GEMM), matmul (zero points, transposes; matmul_small up to the int32 bound at K = 2^15) and mul ops;
layernorm in both requant forms (f53 and the pre-clamped fp64 form) on edge rows, D from 1 to 4,096,
and its requant at the rounding ties; softmax causal or not, decode rows, edge rows, exporter-like,
clamped and zero exp tables; the add's int32 form on all 65,536 input pairs, and where that form is
refused; the same bytes on one thread and on several; the switch (GPUMESH_CPU_KERNELS=torch,
`force`) read when an Executor is built, and an Executor's trace under each form; Hypothesis over
random layernorm and softmax cases. Where the reference costs too much
(it recomputes a row per element), a sample of elements goes through it and every element through
an independent exact form (the int64 layernorm, the softmax formula in numpy integers)."""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import compute_element, element_ranges, run_op
from gpumesh.client.core.ops.intmath import INT32_MAX, INT32_MIN, from_le
from gpumesh.client.core.ops.reference import softmax_unmasked
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime import kernels, kernels_cpu
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, save_program
from gpumesh.node.runtime.randprog import _case, exp_table, random_case

CPU = torch.device("cpu")
I8, I32 = DType.INT8, DType.INT32
KERNELS = ("requant_i32", "matmul_small", "layernorm", "softmax", "add_i32", "lut16")
#: Reference work (elements x the row each recomputes) above which only a sample goes through it.
REF_BUDGET = 200_000


@pytest.fixture
def calls(monkeypatch):
    """Calls per fused kernel: kernels_cpu's entry points wrapped (the prepared ops look them up on
    every call, so the wrappers see every use)."""
    counts: Counter = Counter()
    for name in KERNELS:
        def counted(*args, _real=getattr(kernels_cpu, name), _name=name):
            counts[_name] += 1
            return _real(*args)
        monkeypatch.setattr(kernels_cpu, name, counted)
    yield counts
    kernels_cpu.force(None)


@contextlib.contextmanager
def _forced(on: bool | None):
    kernels_cpu.force(on)
    try:
        yield
    finally:
        kernels_cpu.force(None)


def _bytes(t: torch.Tensor) -> bytes:
    return np.ascontiguousarray(t.numpy()).tobytes()


def _run(case, on: bool) -> bytes:
    with _forced(on):
        out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs])
    assert tuple(out.shape) == case.desc.out.shape
    return _bytes(out)


def _both(case, calls: Counter, kernel: str, taken: bool) -> tuple[bytes, int]:
    """(the op's bytes, `kernel`'s calls in the fused run): the fused and the torch form byte-equal,
    `kernel` called in the fused run iff `taken`, no kernel at all in the torch run."""
    calls.clear()
    fused = _run(case, True)
    used = calls[kernel]
    calls.clear()
    plain = _run(case, False)
    assert not calls, f"the torch forms called {dict(calls)}"
    assert (used > 0) == taken, f"{kernel}: {used} calls, expected taken={taken}"
    assert fused == plain
    return fused, used


def _ref_bytes(case) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in case.inputs]


def _ref_equal(case, got: bytes, row: int) -> None:
    """got equals the scalar reference: on every element where elements x `row` (the work each
    element's recomputation costs) fits REF_BUDGET, else on a sample (every row's ends, random)."""
    d, ins = case.desc, _ref_bytes(case)
    n = d.out.count
    if n * row <= REF_BUDGET:
        assert got == run_op(d, ins)
        return
    w = d.out.dtype.width
    rng = np.random.default_rng(n)
    last = d.out.shape[-1]
    idx = sorted({*range(0, n, last), *range(last - 1, n, last), *rng.integers(0, n, 48).tolist()})
    idx = idx[:: max(1, len(idx) // 96)]
    for i in idx:
        chunks = [ins[r.input][r.start : r.end] for r in element_ranges(d, i, lambda k, s, e: ins[k][s:e])]
        assert from_le(got[i * w : (i + 1) * w], w)[0] == compute_element(d, i, chunks), f"element {i}"


# ---------------------------------------------------------------------------------------------
# 1. The int32 requant: the requant op, linear (folded bias), matmul, mul


def _out_range(rng, shift: int) -> tuple[int, int, int]:
    """(zp != 0, lo, hi), lo > -128 and hi < 127; for shifts above 23 near zero, where (hi + 1) 2^shift
    and lo 2^shift still fit int32 (requant._int32_form)."""
    room = min(128, (1 << 31) >> shift)
    zp = int(rng.integers(-(room // 2), room // 2)) or -1
    lo = int(rng.integers(max(-127, -room), zp + 1))
    hi = int(rng.integers(zp, min(126, room - 2) + 1))
    return zp, lo, hi


def _accs(rng, mults: list[int], shifts: list[int], zp: int, lo: int, hi: int) -> list[int]:
    """Accumulators at, below and above every channel's pre-clamp bounds, next to rounding ties in
    and around [lo, hi], and at the int32 extremes."""
    accs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    for mu, sh in zip(mults, shifts, strict=True):
        for a in rq.pre_clamp_bounds(mu, sh, zp, lo, hi) or ():
            accs += [a - 2, a - 1, a, a + 1, a + 2]
        for k in rng.integers(lo - zp - 2, hi - zp + 3, 4).tolist():
            a0 = ((2 * k + 1) << (sh - 1)) // mu
            accs += [a0 - 1, a0, a0 + 1]
    return [a for a in accs if INT32_MIN <= a <= INT32_MAX]


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
        zp, lo, hi = _out_range(rng, shift)
        if not per_channel:
            mults, shifts = [mults[0]] * ch, [shift] * ch
        acc = np.repeat(np.array(_accs(rng, mults, shifts, zp, lo, hi), dtype=np.int32)[:, None], ch, axis=1)
        types, arrays = [TensorType(I32, acc.shape)], [acc]
        if per_channel:
            qp = np.array([mults, shifts], dtype=np.int32).T.copy()
            types.append(TensorType(I32, qp.shape)), arrays.append(qp)
            req = Requant(ReqMode.PER_CHANNEL, 0, 0, zp, lo, hi)
        else:
            qp, req = None, Requant(ReqMode.PER_TENSOR, mults[0], shift, zp, lo, hi)
        case = _case(Opcode.REQUANT, types, arrays, requant=req)
        with _forced(True):
            r = rq.requant_of(case.desc, qp, CPU)
        form = r.pre is not None and r.i32 is not None
        taken += form
        got, _ = _both(case, calls, "requant_i32", form)
        ref = run_op(case.desc, _ref_bytes(case))
        assert got == ref, (mults, shifts, zp, lo, hi)
        if form:  # the in-place entry, into a strided int8 output (written through a copy)
            out = torch.empty((ch, acc.shape[0]), dtype=torch.int8).t()
            r.int32_(torch.from_numpy(acc.copy()), out=out)
            assert _bytes(out) == ref
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
        zp, lo, hi = _out_range(rng, shift)
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
        with _forced(True):
            r = rq.requant_of(case.desc, qp, CPU)
            b_eff = b - x_zp * w.astype(np.int64).sum(axis=1)
            b_eff = (b_eff + 2**31) % 2**32 - 2**31
            fold = r.fold_bias(b_eff, reach) if (reach + np.abs(b_eff) <= INT32_MAX).all() else None
        form = r.pre is not None and r.i32 is not None
        folded += fold is not None and fold[0] == "jit"
        refused += form and fold is None
        got, _ = _both(case, calls, "requant_i32", form)
        _ref_equal(case, got, k)
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
    got, _ = _both(case, calls, "requant_i32", mult == 1)
    _ref_equal(case, got, k)


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
    for case, count in ((lin, 1), (_matmul_case(rng, a, b, 0, 1, -7, 9), 1)):
        got, used = _both(case, calls, "requant_i32", True)
        assert used == count
        assert got == run_op(case.desc, _ref_bytes(case))
    assert kernels._INT_MM_OK["cpu"] is False


def _scaled_requant(rng, acc_max: int) -> Requant:
    """A per-tensor requant with m <= 1 that maps about +-acc_max onto about +-100 (not all
    saturated), zp != 0, a range narrower than int8."""
    shift = int(rng.integers(12, 24))
    zp, lo, hi = _out_range(rng, shift)
    return Requant(ReqMode.PER_TENSOR, max(1, min(1 << shift, (100 << shift) // max(1, acc_max))), shift, zp, lo, hi)


def _matmul_case(rng, a, b, ta: int, tb: int, za: int, zb: int):
    a64 = (np.swapaxes(a, -1, -2) if ta else a).astype(np.int64) - za
    b64 = (np.swapaxes(b, -1, -2) if tb else b).astype(np.int64) - zb
    req = _scaled_requant(rng, int(np.abs(a64 @ b64).max()))
    return _case(Opcode.MATMUL, [TensorType(I8, a.shape), TensorType(I8, b.shape)], [a, b], ta=ta, tb=tb,
                 za=za, zb=zb, requant=req)


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
        case = _matmul_case(rng, a, b, ta, tb, za, zb)
        with _forced(True):
            r = rq.requant_of(case.desc, None, CPU)
        assert r.pre is not None and r.i32 is not None
        got, used = _both(case, calls, kernel, True)
        assert used == count
        _ref_equal(case, got, k if tb else k * n)  # (untransposed, an element reads b's [K, N] slab)


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
    case = _matmul_case(rng, a, b, 0, tb, za, zb)
    got, used = _both(case, calls, "matmul_small", True)
    assert used == 1
    _ref_equal(case, got, k if tb else k * 3)


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
        req = _scaled_requant(rng, 255 * 255)
        t = TensorType(I8, a.shape)
        case = _case(Opcode.MUL, [t, t], [a, b], za=za, zb=zb, requant=req)
        got, used = _both(case, calls, "requant_i32", True)
        assert used == -(-a.size // min(block, a.size))
        assert got == run_op(case.desc, _ref_bytes(case))


# ---------------------------------------------------------------------------------------------
# 2. layernorm


def _ln_taken(case) -> bool:
    """Whether the prepared layernorm takes the fused kernel: the float64 form (an fp64 or f53
    requant, z * gamma + beta inside int32) with a pre-clamped per-tensor requant (_ln_jit_form)."""
    d = case.desc
    with _forced(True):
        r = rq.requant_of(d, None, CPU)
    beta_max = int(np.abs(case.inputs[2].astype(np.int64)).max())
    fits = 128 * (math.isqrt(d.out.shape[-1] << 24) + 1) + beta_max <= INT32_MAX
    return (r.fp64 or r.f53 is not None) and fits and kernels._ln_jit_form(r) is not None


def _ln_case(x: np.ndarray, g: np.ndarray, beta: np.ndarray, req: Requant, **attrs):
    dd = x.shape[-1]
    return _case(Opcode.LAYERNORM, [TensorType(I8, x.shape), TensorType(I8, (dd,)), TensorType(I32, (dd,))],
                 [x.astype(np.int8), g.astype(np.int8), beta.astype(np.int32)], requant=req, **attrs)


def _ln_check(case, calls, taken: bool) -> None:
    got, _ = _both(case, calls, "layernorm", taken)
    want = kernels._layernorm(case.desc, *(torch.from_numpy(np.array(a)) for a in case.inputs))
    assert got == _bytes(want)  # the int64 form, every element
    _ref_equal(case, got, case.desc.out.shape[-1])


@pytest.mark.parametrize("form", ["f53", "fp64"])
@pytest.mark.parametrize("dd", [1, 2, 8, 256, 1024, 4096])
def test_layernorm_edge_rows_in_both_requant_forms(dd, form, calls):
    """LayerNorm and RMSNorm, x_zp != 0, eps 0 (constant rows: sigma = 0) or not; rows all -128, all
    127, constant at x_zp, alternating, one outlier, random (70 rows for small D: more than the torch
    form's FEW_ROWS); gamma at -128, 127, 0, +-1; beta at +-the largest the float64 form takes, or
    moderate. Requants: f53 (the exporter's 31-bit multiplier over shift 45) or the pre-clamped fp64
    form (shift <= 42; floor where lo < 0, truncation otherwise), lo mod 256 nonzero."""
    rng = np.random.default_rng(dd * 2 + (form == "f53"))
    x_zp = 3
    alt = np.resize([-128, 127], dd)
    outlier = np.full(dd, -128)
    outlier[dd // 2] = 127
    rows = [np.full(dd, -128), np.full(dd, 127), np.full(dd, x_zp), alt, outlier, rng.integers(-4, 5, dd)]
    rows += list(rng.integers(-128, 128, ((70 if dd <= 8 else 8) - len(rows), dd)))
    x = np.stack(rows)
    g = rng.choice([-128, 127, 0, 1, -1, int(rng.integers(-128, 128))], dd)
    beta_max = INT32_MAX - 128 * (math.isqrt(dd << 24) + 1)
    for i, ((zp, lo, hi), rms) in enumerate([(r, m) for r in ((0, -128, 127), (3, -50, 100), (-2, 10, 60))
                                               for m in (0, 1)]):
        if i % 2:
            beta = rng.integers(-beta_max, beta_max + 1, dd)
            beta[0], beta[-1] = beta_max, -beta_max
        else:
            beta = rng.integers(-(1 << 16), 1 << 16, dd)
        if form == "f53":
            req = Requant(ReqMode.PER_TENSOR, int(rng.integers(1 << 30, 1 << 31)), 45, zp, lo, hi)
        else:
            shift = int(rng.integers(20, 43))
            req = Requant(ReqMode.PER_TENSOR, int(rng.integers(1 << (shift - 13), 1 << (shift - 11))), shift, zp, lo, hi)
        case = _ln_case(x, g, beta, req, x_zp=x_zp, rms=rms, eps=(0, 2)[i // 2 % 2])
        with _forced(True):
            r = rq.requant_of(case.desc, None, CPU)
        assert (r.f53 is not None) == (form == "f53") and _ln_taken(case)
        _ln_check(case, calls, True)


@pytest.mark.parametrize("shift", [13, 24, 31, 36, 40, 42, 43, 45, 48])
def test_layernorm_requant_at_its_ties_and_bounds(shift, calls):
    """The kernel's float64 requant of acc = z * gamma + beta (fp64: c + acc * m, two roundings
    where torch's add may fuse them; f53: exact) on accumulators next to every rounding tie and at
    the pre-clamp bounds: with gamma = 0, acc is beta itself, one chosen accumulator per column."""
    rng = np.random.default_rng(shift)
    dd = 64
    limit = INT32_MAX - 128 * (math.isqrt(dd << 24) + 1)
    taken = 0
    for i in range(6):
        mult = int(rng.integers(1 << 30, 1 << 31)) if i % 2 else max(1, int(rng.integers(1, 1 << 31)) >> int(
            rng.integers(0, 12)))
        mult = min(mult, 1 << shift)
        zp, lo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        if shift > 45:  # f53 needs (hi - lo + 1) 2^shift and (zp - lo) 2^shift within 2^53
            hi = min(hi, lo + 24)
            zp = int(rng.integers(lo - 4, hi + 5))
        accs = [a + e for a in rq.pre_clamp_bounds(mult, shift, zp, lo, hi) or () for e in (-1, 0, 1)]
        for k in rng.integers(lo - zp - 1, hi - zp + 2, 12).tolist():
            a0 = ((2 * k + 1) << (shift - 1)) // mult
            accs += [a0 - 1, a0, a0 + 1]
        beta = np.array([a for a in accs if abs(a) <= limit][:dd] + [0] * dd)[:dd]
        beta[-1] = int(rng.integers(-limit, limit + 1))
        case = _ln_case(rng.integers(-128, 128, (3, dd)), np.zeros(dd), beta,
                        Requant(ReqMode.PER_TENSOR, mult, shift, zp, lo, hi), x_zp=0, rms=i % 2, eps=0)
        t = _ln_taken(case)
        taken += t
        got, _ = _both(case, calls, "layernorm", t)
        assert got == run_op(case.desc, _ref_bytes(case))
    assert taken >= 4


@pytest.mark.parametrize("why", ["m_above_1", "shift_53", "beta_too_large", "per_tensor_zero_mult"])
def test_layernorm_forms_the_kernel_refuses(why, calls):
    """Where the fused kernel does not apply (no pre-clamp: m > 1 or mult 0; a shift beyond both
    float64 forms; a beta that can take z * gamma + beta out of int32), the torch or int64 form
    runs in both modes: the same bits, and no kernel call."""
    rng = np.random.default_rng(len(why))
    dd = 16
    x = rng.integers(-128, 128, (5, dd))
    x[0] = 9
    beta = rng.integers(-1000, 1000, dd)
    req = {"m_above_1": Requant(ReqMode.PER_TENSOR, (1 << 20) + 5, 20, 1, -128, 127),
           "shift_53": Requant(ReqMode.PER_TENSOR, 1 << 30, 53, 0, -128, 127),
           "beta_too_large": Requant(ReqMode.PER_TENSOR, 1 << 20, 40, 0, -100, 100),
           "per_tensor_zero_mult": Requant(ReqMode.PER_TENSOR, 0, 20, 4, -128, 127)}[why]
    if why == "beta_too_large":
        beta[3] = INT32_MAX - 128 * math.isqrt(dd << 24)
    case = _ln_case(x, rng.integers(-128, 128, dd), beta, req, x_zp=-1, rms=0, eps=0)
    assert not _ln_taken(case)
    _ln_check(case, calls, False)


# ---------------------------------------------------------------------------------------------
# 3. softmax


def _softmax_formula(x: np.ndarray, table: np.ndarray, causal: int, off: int) -> bytes:
    """docs/protocol.md 2.2.1 row by row in numpy integers: reference.softmax_element's formula with
    S computed once per row."""
    length, rows = x.shape[-1], x.shape[-2]
    e_tab = np.clip(table.astype(np.int64), 0, 1 << 15)
    e_tab[0] = 1 << 15
    flat = x.reshape(-1, length).astype(np.int64)
    y = np.full(flat.shape, -128, dtype=np.int64)
    for r, row in enumerate(flat):
        n = softmax_unmasked(length, rows, r, causal, off)
        e = e_tab[row[:n].max() - row[:n]]
        s = int(e.sum())
        y[r, :n] = np.minimum((512 * e + s) // (2 * s) - 128, 127)
    return y.astype(np.int8).tobytes()


def _tables(rng) -> list[np.ndarray]:
    """The exporter's exp tables (round(2^15 exp(-d s)), one that reaches 0), one of arbitrary int32
    entries (negative and above 2^15: clamped), all zeros, all 2^31 - 1."""
    junk = rng.integers(INT32_MIN, INT32_MAX, 256, dtype=np.int64)
    junk[1], junk[2], junk[3] = INT32_MAX, -5, (1 << 15) + 1
    return [exp_table(0.05), exp_table(1 / 16), junk.astype(np.int32), np.zeros(256, np.int32),
            np.full(256, INT32_MAX, np.int32)]


@pytest.mark.parametrize("causal,off", [(0, 0), (1, 0), (1, 1), (1, 5), (1, 699), (1, 2**32 - 1)])
@pytest.mark.parametrize("shape", [(3, 6, 6), (2, 4, 11), (9, 5), (2, 1, 700), (1, 1), (1, 128, 128), (2, 96, 96)],
                         ids=str)
def test_softmax_rows_tables_and_masks(shape, causal, off, calls):
    """R = L, R < L, R > L, decode rows (R = 1, a long L), one logit, one group of many rows and a
    few groups (enough work for the kernels' parallel forms, which cut rows or groups); rows
    random, all equal, one huge logit over -128s, all -128, all 127, two values; every table of
    `_tables`. Masked entries are -128."""
    rng = np.random.default_rng(sum(shape) + causal + off % 1000)
    length = shape[-1]
    x = rng.integers(-128, 128, shape)
    flat = x.reshape(-1, length)
    for r in range(flat.shape[0]):
        kind = r % 6
        if kind == 1:
            flat[r] = int(rng.integers(-128, 128))
        elif kind == 2:
            flat[r] = -128
            flat[r, int(rng.integers(0, length))] = 127
        elif kind in (3, 4):
            flat[r] = (-128, 127)[kind - 3]
        elif kind == 5:
            flat[r] = rng.choice([-128, 127], length)
    x = x.astype(np.int8)
    for table in _tables(rng):
        case = _case(Opcode.SOFTMAX, [TensorType(I8, shape), TensorType(I32, (256,))], [x, table],
                     causal=causal, off=off)
        got, _ = _both(case, calls, "softmax", True)
        assert got == _softmax_formula(x, table, causal, off)
        _ref_equal(case, got, length)
        y = np.frombuffer(got, dtype=np.int8).reshape(-1, length)
        for r in range(y.shape[0]):
            assert (y[r, softmax_unmasked(length, shape[-2], r, causal, off) :] == -128).all()


def _thread_cases(rng) -> list[tuple[object, str]]:
    """(case, kernel) with enough work for a parallel kernel call: a softmax of one group of many
    rows (cut by rows: the causal offset moves with each part) and of a few groups, layernorm rows,
    the add, the per-channel requant, a decode step's matmul over two entries."""
    sm = [_case(Opcode.SOFTMAX, [TensorType(I8, shape), TensorType(I32, (256,))],
                [rng.integers(-128, 128, shape).astype(np.int8), exp_table(0.03)], causal=1, off=3)
          for shape in ((1, 256, 256), (3, 64, 128))]
    x = rng.integers(-128, 128, (64, 1024))
    ln = _ln_case(x, rng.integers(-128, 128, 1024), rng.integers(-(1 << 16), 1 << 16, 1024),
                  Requant(ReqMode.PER_TENSOR, 1896750708, 45, 2, -100, 110), x_zp=1, rms=0, eps=1)
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    t = TensorType(I8, a.shape)
    add = _case(Opcode.ADD, [t, t], [a, a.T.copy()], za=1, zb=-2, ma=1 << 19, mb=3 << 18, shift=20, zy=3, lo=-90,
                hi=100)
    acc = rng.integers(-(1 << 20), 1 << 20, (512, 256)).astype(np.int32)
    qp = np.stack([rng.integers(1, 1 << 10, 256), rng.integers(12, 20, 256)], axis=1).astype(np.int32)
    req = _case(Opcode.REQUANT, [TensorType(I32, acc.shape), TensorType(I32, qp.shape)], [acc, qp],
                requant=Requant(ReqMode.PER_CHANNEL, 0, 0, -3, -120, 120))
    mm = _matmul_case(rng, rng.integers(-128, 128, (2, 4, 4096)).astype(np.int8),
                      rng.integers(-128, 128, (2, 64, 4096)).astype(np.int8), 0, 1, 5, -9)
    return [*((c, "softmax") for c in sm), (ln, "layernorm"), (add, "add_i32"), (req, "requant_i32"),
            (mm, "matmul_small")]


def test_the_same_bits_on_one_thread_and_on_several(calls):
    """The fused kernels on one thread and on every thread torch may use (their parallel forms
    split rows, groups, batch entries or flat elements into one block per thread): the same bytes,
    those of the torch forms."""
    rng = np.random.default_rng(17)
    before = torch.get_num_threads()
    try:
        for case, kernel in _thread_cases(rng):
            torch.set_num_threads(1)
            one, _ = _both(case, calls, kernel, True)
            torch.set_num_threads(max(2, before))
            assert _run(case, True) == one, kernel
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# 4. add

#: (za, zb, ma, mb, shift, zy, lo, hi, int32 form): the exporter's kind (m <= 2, shift <= 22) at
#: zero-point extremes, lo = hi, shift 30; refused: shift above 30, x * ma beyond int32.
ADD_CASES = [
    (3, -5, 1 << 19, 3 << 18, 20, 4, -100, 90, True),
    (-128, 127, 2 << 22, 1, 22, -128, -128, 127, True),
    (127, -128, 1, 2, 1, 0, -127, 126, True),
    (0, 0, 5, 7, 3, 0, 0, 0, True),
    (-7, 9, 1 << 22, 1 << 22, 30, 0, -1, 1, True),
    (5, 5, 2**31 - 1, 3, 40, 0, -128, 127, False),
    (1, -1, 1 << 30, 1 << 30, 20, 0, -128, 127, False),
]


@pytest.mark.parametrize("params", ADD_CASES, ids=lambda p: f"s{p[4]}-{'i32' if p[-1] else 'refused'}")
def test_add_on_every_input_pair(params, calls):
    *attrs, taken = params
    names = ("za", "zb", "ma", "mb", "shift", "zy", "lo", "hi")
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)  # every (x, y) pair
    t = TensorType(I8, a.shape)
    case = _case(Opcode.ADD, [t, t], [a, a.T.copy()], **dict(zip(names, attrs, strict=True)))
    assert (kernels._add_int32(dict(case.desc.attrs)) is not None) == taken
    got, used = _both(case, calls, "add_i32", taken)
    assert used == taken  # one pass over the whole tensor
    assert got == run_op(case.desc, _ref_bytes(case))


# ---------------------------------------------------------------------------------------------
# 5. The switch, and an Executor under each form


def test_the_switch(monkeypatch):
    """GPUMESH_CPU_KERNELS=torch (any case, spaces) turns the kernels off; force overrides the
    environment either way; force(None) gives the environment's choice back."""
    try:
        monkeypatch.delenv(kernels_cpu.ENV, raising=False)
        kernels_cpu.force(None)
        assert kernels_cpu.enabled()
        for value, on in (("torch", False), (" Torch ", False), ("numba", True), ("", True)):
            monkeypatch.setenv(kernels_cpu.ENV, value)
            assert kernels_cpu.enabled() == on, value
        monkeypatch.setenv(kernels_cpu.ENV, "torch")
        kernels_cpu.force(True)
        assert kernels_cpu.enabled()
        kernels_cpu.force(None)
        assert not kernels_cpu.enabled()
        monkeypatch.delenv(kernels_cpu.ENV)
        kernels_cpu.force(False)
        assert not kernels_cpu.enabled()
        assert not rq.Requant(1, 4, 0, -128, 127, CPU).jit
    finally:
        kernels_cpu.force(None)


T, D = 16, 8  # q.k^T and P.V: 16 rows (the GEMM branch); k^T.q: D = 8 rows (matmul_small)


def _req(mult: int, shift: int, zp: int = 0, lo: int = -128, hi: int = 127) -> dict:
    return {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": zp, "lo": lo, "hi": hi}


def _op(name, op, inputs, dtype, shape, **attrs):
    return {"name": name, "op": op, "inputs": inputs, "out": {"dtype": dtype, "shape": shape}, "attrs": attrs}


def _attention_program():
    """An attention block that reaches every fused kernel: layernorm (f53), linears, q.k^T, a causal
    softmax, P.V to int32, a per-channel requant, an add in its int32 form, k^T.q, a mul."""
    w = [{"name": "g", "dtype": "int8", "shape": [D]}, {"name": "be", "dtype": "int32", "shape": [D]},
         {"name": "tab", "dtype": "int32", "shape": [256]}, {"name": "qp", "dtype": "int32", "shape": [D, 2]}]
    w += [{"name": f"w{n}", "dtype": "int8", "shape": [D, D]} for n in "qkv"]
    w += [{"name": f"b{n}", "dtype": "int32", "shape": [D]} for n in "qkv"]
    ops = [_op("ln", "layernorm", ["x", "g", "be"], "int8", [T, D], x_zp=1, rms=0, eps=1,
               requant=_req(1896750708, 45))]
    ops += [_op(n, "linear", ["ln", f"w{n}", f"b{n}"], "int8", [T, D], x_zp=0, requant=_req(1 << 9, 16, 2, -120, 120))
            for n in "qkv"]
    ops += [_op("s", "matmul", ["q", "k"], "int8", [T, T], ta=0, tb=1, za=3, zb=-2, requant=_req(1 << 9, 20, 1)),
            _op("p", "softmax", ["s", "tab"], "int8", [T, T], causal=1, off=0),
            _op("o32", "matmul", ["p", "v"], "int32", [T, D], ta=0, tb=0, za=-128, zb=0, requant={"mode": "none"}),
            _op("o", "requant", ["o32", "qp"], "int8", [T, D],
                requant={"mode": "per_channel", "mult": 0, "shift": 0, "zp": -3, "lo": -128, "hi": 127}),
            _op("r", "add", ["o", "ln"], "int8", [T, D], za=0, zb=1, ma=1 << 19, mb=3 << 18, shift=20, zy=-2,
                lo=-120, hi=120),
            _op("kq", "matmul", ["k", "q"], "int8", [D, D], ta=1, tb=0, za=-5, zb=7, requant=_req(1 << 9, 20, 1)),
            _op("y", "mul", ["r", "r"], "int8", [T, D], za=-1, zb=4, requant=_req(1 << 13, 20, -3))]
    return from_json({"format": "gpumesh.program", "version": 1,
                      "input": {"name": "x", "dtype": "int8", "shape": [T, D]}, "weights": w, "ops": ops})


def _weights(rng) -> dict[str, np.ndarray]:
    out = {"g": rng.integers(-128, 128, D).astype(np.int8), "be": rng.integers(-(1 << 20), 1 << 20, D).astype(np.int32),
           "tab": exp_table(1 / 16),
           "qp": np.stack([rng.integers(1 << 4, 1 << 8, D), rng.integers(14, 18, D)], axis=1).astype(np.int32)}
    for n in "qkv":
        out[f"w{n}"] = rng.integers(-128, 128, (D, D)).astype(np.int8)
        out[f"b{n}"] = rng.integers(-(1 << 16), 1 << 16, D).astype(np.int32)
    return out


def _reference_chain(prog, weights: dict, unit: np.ndarray) -> list[bytes]:
    from gpumesh.client.core.ops.types import SlotKind

    outs: list[bytes] = []
    for op in prog.ops:
        ins = [np.ascontiguousarray(weights[prog.weights[s.index].name]).tobytes() if s.kind == SlotKind.WEIGHT
               else unit.tobytes() if s.kind == SlotKind.UNIT_INPUT else outs[s.index] for s in op.desc.inputs]
        outs.append(run_op(op.desc, ins))
    return outs


def test_an_executor_keeps_the_form_it_was_built_with(tmp_path, calls, monkeypatch):
    """Executors built under force(True), force(False) and GPUMESH_CPU_KERNELS=torch: the first
    calls each of the four kernels, the others none, even with the switch flipped after the build
    (the form is chosen when the ops are prepared); all three give the reference's op outputs, the
    same trace root, streamed roots and stacked-run outputs."""
    rng = np.random.default_rng(5)
    prog = _attention_program()
    weights = _weights(rng)
    save_program(tmp_path, prog, weights)
    bundle = load_program(tmp_path)
    units = rng.integers(-128, 128, (3, T, D)).astype(np.int8)
    units[1, :4] = -128
    ref = _reference_chain(prog, weights, units[0])
    assert len(set(ref[-1])) > 4  # the output is not saturated to a constant
    seen = {}
    try:
        for name, on in (("fused", True), ("torch", False), ("env", None)):
            if name == "env":
                monkeypatch.setenv(kernels_cpu.ENV, "torch")
            kernels_cpu.force(on)
            ex = Executor(bundle)
            kernels_cpu.force(name != "fused")  # flipped: the prepared ops keep their form
            calls.clear()
            tr = ex.trace(units[0])
            streamed = ex.trace_roots(units[0])
            out = ex.run_units(units)
            used = dict(calls)
            kernels_cpu.force(None)
            if name == "fused":
                assert all(used.get(k, 0) > 0 for k in KERNELS if k != "lut16"), used  # (no lut in the chain)
            else:
                assert not used, (name, used)
            assert list(tr.outputs) == ref, name
            assert streamed == list(tr.roots), name
            seen[name] = (tr.trace_root, np.ascontiguousarray(out).tobytes())
    finally:
        kernels_cpu.force(None)
    assert seen["fused"] == seen["torch"] == seen["env"]


# ---------------------------------------------------------------------------------------------
# 6. _np_vec


def test_np_vec_refuses_a_parameter_outside_int32():
    assert rq._np_vec(5, 3).tolist() == [5, 5, 5] and rq._np_vec(5, 3).dtype == np.int32
    assert rq._np_vec(torch.tensor(-7), 2).tolist() == [-7, -7]
    assert rq._np_vec([INT32_MIN, INT32_MAX], 2).tolist() == [INT32_MIN, INT32_MAX]
    for bad in (INT32_MAX + 1, INT32_MIN - 1, [0, 1 << 31], torch.tensor([1, INT32_MIN - 1], dtype=torch.int64)):
        with pytest.raises(ValueError, match="outside int32"):
            rq._np_vec(bad, 2)
    with pytest.raises(ValueError):
        rq._np_vec([1, 2, 3], 2)  # not one entry per channel


# ---------------------------------------------------------------------------------------------
# 7. Hypothesis: random layernorm and softmax cases


@pytest.mark.parametrize("op", [Opcode.LAYERNORM, Opcode.SOFTMAX], ids=lambda o: o.name.lower())
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cases_fused_equal_the_reference(op, data, calls):
    case = random_case(lambda lo, hi: data.draw(st.integers(lo, hi)), op, max_dim=8)
    taken = _ln_taken(case) if op == Opcode.LAYERNORM else True
    got, _ = _both(case, calls, op.name.lower(), taken)
    assert got == run_op(case.desc, _ref_bytes(case))


@pytest.mark.parametrize("shape", [(256,), (8, 16, 64), (2, 3, 5), (1,)], ids=["all_bytes", "even", "odd", "one"])
def test_lut_through_the_pair_table(shape, calls):
    """The lut (every int8 value where the shape holds 256) through kernels_cpu.lut16's pair table
    and through the torch forms, equal to the reference; an odd element count keeps the byte table
    (no lut16 call)."""
    rng = np.random.default_rng(len(shape))
    n = int(np.prod(shape))
    x = (np.arange(-128, 128) if n == 256 else rng.integers(-128, 128, n)).astype(np.int8).reshape(shape)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    case = _case(Opcode.LUT, [TensorType(I8, shape), TensorType(I8, (256,))], [x, table])
    got, used = _both(case, calls, "lut16", n % 2 == 0)
    assert got == run_op(case.desc, _ref_bytes(case))
    assert np.frombuffer(got, np.int8).tolist() == [int(table[int(v) + 128]) for v in x.reshape(-1)]
