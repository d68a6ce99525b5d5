"""The fused CPU kernels against the torch forms and the reference (the method: test_kernels_cpu.py):
layernorm in both requant forms (f53 and the pre-clamped fp64 form) on edge rows, D from 1 to 4,096,
and its requant at the rounding ties, and the forms it refuses; softmax causal or not, decode rows,
edge rows, exporter-like, clamped and zero exp tables; the same bytes on one thread and on several;
the add's int32 form on all 65,536 input pairs, and where that form is refused; the lut through the
pair table. Where the reference costs too much, a sample of elements goes through it and every
element through an independent exact form (the int64 layernorm, the softmax formula in numpy
integers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.intmath import INT32_MAX, INT32_MIN
from gpumesh.client.core.ops.reference import softmax_unmasked
from gpumesh.client.core.ops.types import Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.randprog import _case, exp_table
from tests.unit.runtime.kernels_cpu_cases import (
    CPU,
    I8,
    I32,
    both,
    forced,
    ln_taken,
    matmul_case,
    ref_bytes,
    ref_equal,
    run_case,
    tensor_bytes,
)


def _ln_case(x: np.ndarray, g: np.ndarray, beta: np.ndarray, req: Requant, **attrs):
    dd = x.shape[-1]
    return _case(Opcode.LAYERNORM, [TensorType(I8, x.shape), TensorType(I8, (dd,)), TensorType(I32, (dd,))],
                 [x.astype(np.int8), g.astype(np.int8), beta.astype(np.int32)], requant=req, **attrs)


def _ln_check(case, calls, taken: bool) -> None:
    got, _ = both(case, calls, "layernorm", taken)
    want = kernels._layernorm(case.desc, *(torch.from_numpy(np.array(a)) for a in case.inputs))
    assert got == tensor_bytes(want)  # the int64 form, every element
    ref_equal(case, got, case.desc.out.shape[-1])


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
        with forced(True):
            r = rq.requant_of(case.desc, None, CPU)
        assert (r.f53 is not None) == (form == "f53") and ln_taken(case)
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
        t = ln_taken(case)
        taken += t
        got, _ = both(case, calls, "layernorm", t)
        assert got == run_op(case.desc, ref_bytes(case))
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
    assert not ln_taken(case)
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
        got, _ = both(case, calls, "softmax", True)
        assert got == _softmax_formula(x, table, causal, off)
        ref_equal(case, got, length)
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
    mm = matmul_case(rng, rng.integers(-128, 128, (2, 4, 4096)).astype(np.int8),
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
            one, _ = both(case, calls, kernel, True)
            torch.set_num_threads(max(2, before))
            assert run_case(case, True) == one, kernel
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
    got, used = both(case, calls, "add_i32", taken)
    assert used == taken  # one pass over the whole tensor
    assert got == run_op(case.desc, ref_bytes(case))


# ---------------------------------------------------------------------------------------------
# 5. The switch, and an Executor under each form
