"""Shared cases of the fused CPU kernel tests (test_kernels_cpu*.py): run an op prepared with
the fused kernels and with the torch forms (`both`), compare with the scalar reference in full or
on a sample (`ref_equal`), the requant edge values (`out_range`, `accs`, `scaled_requant`), matmul cases
(`matmul_case`) and whether a layernorm takes the kernel (`ln_taken`). The `calls` fixture
(conftest.py) counts each kernel's calls."""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import numpy as np
import torch

from gpumesh.client.core.ops import compute_element, element_ranges, run_op
from gpumesh.client.core.ops.intmath import INT32_MAX, INT32_MIN, from_le
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels, kernels_cpu
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.randprog import _case

CPU = torch.device("cpu")
I8, I32 = DType.INT8, DType.INT32
KERNELS = ("requant_i32", "matmul_small", "layernorm", "softmax", "add_i32", "lut16")
#: Reference work (elements x the row each recomputes) above which only a sample goes through it.
REF_BUDGET = 200_000


@contextlib.contextmanager
def forced(on: bool | None):
    kernels_cpu.force(on)
    try:
        yield
    finally:
        kernels_cpu.force(None)


def tensor_bytes(t: torch.Tensor) -> bytes:
    return np.ascontiguousarray(t.numpy()).tobytes()


def run_case(case, on: bool) -> bytes:
    with forced(on):
        out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs])
    assert tuple(out.shape) == case.desc.out.shape
    return tensor_bytes(out)


def both(case, calls: Counter, kernel: str, taken: bool) -> tuple[bytes, int]:
    """(the op's bytes, `kernel`'s calls in the fused run): the fused and the torch form byte-equal,
    `kernel` called in the fused run iff `taken`, no kernel at all in the torch run."""
    calls.clear()
    fused = run_case(case, True)
    used = calls[kernel]
    calls.clear()
    plain = run_case(case, False)
    assert not calls, f"the torch forms called {dict(calls)}"
    assert (used > 0) == taken, f"{kernel}: {used} calls, expected taken={taken}"
    assert fused == plain
    return fused, used


def ref_bytes(case) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in case.inputs]


def ref_equal(case, got: bytes, row: int) -> None:
    """got equals the scalar reference: on every element where elements x `row` (the work each
    element's recomputation costs) fits REF_BUDGET, else on a sample (every row's ends, random)."""
    d, ins = case.desc, ref_bytes(case)
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

def out_range(rng, shift: int) -> tuple[int, int, int]:
    """(zp != 0, lo, hi), lo > -128 and hi < 127; for shifts above 23 near zero, where (hi + 1) 2^shift
    and lo 2^shift still fit int32 (requant._int32_form)."""
    room = min(128, (1 << 31) >> shift)
    zp = int(rng.integers(-(room // 2), room // 2)) or -1
    lo = int(rng.integers(max(-127, -room), zp + 1))
    hi = int(rng.integers(zp, min(126, room - 2) + 1))
    return zp, lo, hi


def accs(rng, mults: list[int], shifts: list[int], zp: int, lo: int, hi: int) -> list[int]:
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


def scaled_requant(rng, acc_max: int) -> Requant:
    """A per-tensor requant with m <= 1 that maps about +-acc_max onto about +-100 (not all
    saturated), zp != 0, a range narrower than int8."""
    shift = int(rng.integers(12, 24))
    zp, lo, hi = out_range(rng, shift)
    return Requant(ReqMode.PER_TENSOR, max(1, min(1 << shift, (100 << shift) // max(1, acc_max))), shift, zp, lo, hi)

def matmul_case(rng, a, b, ta: int, tb: int, za: int, zb: int):
    a64 = (np.swapaxes(a, -1, -2) if ta else a).astype(np.int64) - za
    b64 = (np.swapaxes(b, -1, -2) if tb else b).astype(np.int64) - zb
    req = scaled_requant(rng, int(np.abs(a64 @ b64).max()))
    return _case(Opcode.MATMUL, [TensorType(I8, a.shape), TensorType(I8, b.shape)], [a, b], ta=ta, tb=tb,
                 za=za, zb=zb, requant=req)

def ln_taken(case) -> bool:
    """Whether the prepared layernorm takes the fused kernel: the float64 form (an fp64 or f53
    requant, z * gamma + beta inside int32) with a pre-clamped per-tensor requant (_ln_jit_form)."""
    d = case.desc
    with forced(True):
        r = rq.requant_of(d, None, CPU)
    beta_max = int(np.abs(case.inputs[2].astype(np.int64)).max())
    fits = 128 * (math.isqrt(d.out.shape[-1] << 24) + 1) + beta_max <= INT32_MAX
    return (r.fp64 or r.f53 is not None) and fits and kernels._ln_jit_form(r) is not None
