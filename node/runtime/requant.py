"""Requantization kernels (docs/protocol.md 2.1, 2.4): the generic int64 form of the spec, and the
prepared forms the executor uses (the int32 pre-clamp, then all-int32 arithmetic where it fits,
else float64 with the exactness proof of 2.4).

Adapter code (imports torch); imported by gpumesh.node.runtime.kernels.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from gpumesh.client.core.ops.types import OpDescriptor, ReqMode
from gpumesh.node.runtime import kernels_cpu

#: Largest requant/add shift for which the float64 path is exact (proof in docs/protocol.md 2.4).
FP64_MAX_SHIFT = 42
#: int32 range.
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def requant(acc: torch.Tensor, mult, shift, zp: int, lo: int, hi: int) -> torch.Tensor:
    """clamp(((acc*mult + 2^(shift-1)) >> shift) + zp, lo, hi) on int64; mult/shift are ints or int64
    tensors broadcast along the last axis. In-place int64 ops: this is memory-bound. No host sync (a
    CUDA graph can capture it): a prepared op hands a shift that is the same on every channel (what
    the export emits) as an int, which takes the scalar-shift path."""
    a = acc.to(torch.int64)
    a.mul_(mult)
    if isinstance(shift, int):
        a.add_(1 << (shift - 1)).bitwise_right_shift_(shift)
    else:
        a.add_(torch.ones_like(shift) << (shift - 1)).bitwise_right_shift_(shift)
    if zp:
        a.add_(zp)
    return a.clamp_(lo, hi).to(torch.int8)


class Requant:
    """A requant prepared once. fp64 mode (CPU and CUDA, every shift <= FP64_MAX_SHIFT): y = floor(clamp(
    A*m + (zp + 1/2), lo, hi)) with m = mult * 2^-shift exact in float64 — exact by the proof in
    docs/protocol.md 2.4. Else the generic int64 `requant` on an int tensor.

    `int32(acc)` is the fast entry: when every channel has 0 < mult <= 2^shift (m <= 1), the result
    is monotone in A and rises by at most 1 per step of A, so clamping A (in int32) to the per-channel
    range [a_lo, a_hi] whose results are exactly lo..hi leaves every y unchanged and puts A*m + c in
    [lo, hi + 1): no float clamp is needed, and with lo >= 0 the int8 cast's truncation is the floor
    (docs/protocol.md 2.4, "pre-clamp")."""

    def __init__(self, mult, shift, zp: int, lo: int, hi: int, device: torch.device) -> None:
        mult = np.asarray(mult, dtype=np.int64).reshape(-1)
        shift = np.asarray(shift, dtype=np.int64).reshape(-1)
        self.zp, self.lo, self.hi, self.device = zp, lo, hi, device
        self.jit = device.type == "cpu" and kernels_cpu.enabled()  # the fused CPU kernels (kernels_cpu)
        self._jit_vecs: dict[int, tuple] = {}
        self.fused = None  # CUDA with Triton: gpu_requant.requant bound to this op's parameters
        if device.type == "cuda":
            from gpumesh.node.runtime import gpu_requant

            if gpu_requant.available():
                self.fused = functools.partial(gpu_requant.requant, mult=torch.from_numpy(mult).to(device),
                                               shift=torch.from_numpy(shift).to(device), zp=zp, lo=lo, hi=hi)
        self.fp64 = int(shift.max()) <= FP64_MAX_SHIFT  # IEEE double on CPU and CUDA alike
        self.pre = None
        self.i32 = None  # (mult, c, shift): the pre-clamped requant in int32 arithmetic (`_int32_form`)
        if self.fp64:
            m = mult.astype(np.float64) * np.exp2(-shift.astype(np.float64))  # exact: a power-of-two scaling
            self.m = float(m[0]) if m.size == 1 else torch.from_numpy(m).to(device)
            self.c = zp + 0.5
            self.c_t = torch.tensor(self.c, dtype=torch.float64, device=device)
            self.floor = lo < 0  # in [lo, hi] with lo >= 0, the int8 cast (truncation) is the floor
            pairs = [(int(mu), int(sh)) for mu, sh in zip(mult, shift, strict=True)]
            b = [pre_clamp_bounds(mu, sh, zp, lo, hi) if 0 < mu <= 1 << sh else None for mu, sh in pairs]
            if None in b:
                pass  # m > 1, mult 0, or every int32 A saturates on some channel: the float clamp path
            elif len(set(b)) == 1:
                self.pre = b[0]
            else:
                lo_t, hi_t = (torch.tensor(v, dtype=torch.int32, device=device) for v in zip(*b, strict=True))
                self.pre = (lo_t, hi_t)
            if None not in b:
                # per channel (mult, shift, a_lo, a_hi, c): the int32 form's parameters
                self._i32_rows = [(mu, sh, lo_, hi_, (1 << (sh - 1)) + zp * (1 << sh))
                                  for (mu, sh), (lo_, hi_) in zip(pairs, b, strict=True)]
                self.i32 = _int32_form(self._i32_rows, device)
        else:
            one = mult.size == 1
            self.mult = int(mult[0]) if one else torch.from_numpy(mult).to(device)
            self.shift = int(shift[0]) if one or (shift == shift[0]).all() else torch.from_numpy(shift).to(device)
        # shifts above FP64_MAX_SHIFT, per tensor: the pre-clamped requant in float64 integers
        # (CPU only: CUDA keeps its fused or int64 forms)
        self.f53 = (None if self.fp64 or mult.size != 1 or device.type != "cpu"
                    else _f53_form(int(mult[0]), int(shift[0]), zp, lo, hi))

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if self.f53 is not None:
            return self.f53_(a if a.dtype == torch.float64 else a.to(torch.float64))
        if self.fp64:  # a: float64, owned by the caller (modified in place)
            a.mul_(self.m).add_(self.c).clamp_(self.lo, self.hi)
            if self.floor:
                a.floor_()
            return a.to(torch.int8)
        return requant(a, self.mult, self.shift, self.zp, self.lo, self.hi)

    def exact_(self, a: torch.Tensor) -> torch.Tensor:
        """Requant of a float64 tensor of exact integer accumulators (|A| < 2^33) owned by the
        caller (modified in place): `fp64_` or, for a shift above FP64_MAX_SHIFT, `f53_`. Only
        where `fp64 or f53 is not None`."""
        return self.f53_(a) if self.f53 is not None else self.fp64_(a)

    def f53_(self, a: torch.Tensor) -> torch.Tensor:
        """The float64-integer form (`_f53_form`) on float64 exact integers, in place: clamp A to
        [a_lo, a_hi], then N * 2^-shift = A * (mult 2^-shift) + c' 2^-shift in one pass, exact
        (`_f53_form`), whose truncation (the uint8 cast; the value is in [0, hi - lo + 1)) is the
        floor; adding lo mod 256 in uint8 gives y's int8 bits."""
        a_lo, a_hi, m, c, lo = self.f53
        u = torch.add(c, a.clamp_(a_lo, a_hi), alpha=m, out=a).to(torch.uint8)
        return (u.add_(lo & 0xFF) if lo & 0xFF else u).view(torch.int8)

    def fp64_(self, a: torch.Tensor) -> torch.Tensor:
        """Requant of a float64 tensor of exact integer accumulators (|A| < 2^33) owned by the
        caller (modified in place), fp64 mode only. With per-tensor pre-clamp bounds: clamp A to
        [a_lo, a_hi] (integers: the clamped A is still exact and every y is unchanged), then
        c + A*m in one pass, which lands in [lo, hi + 1), so no float clamp is needed (the int32
        path's argument, docs/protocol.md 2.4): one pass fewer than `__call__`."""
        if self.pre is None or not isinstance(self.m, float) or not isinstance(self.pre[0], int):
            return self(a)
        torch.add(self.c_t, a.clamp_(*self.pre), alpha=self.m, out=a)
        if self.floor:
            a.floor_()
        return a.to(torch.int8)

    def fold_bias(self, bias: np.ndarray, reach: np.ndarray):
        """The all-int32 form with a per-channel bias folded in, or None. `bias` [N] is the int32
        bias added to the GEMM sum A, `reach` [N] a bound |A| <= reach (128 * sum |W|); the caller
        guarantees reach + |bias| <= 2^31 - 1, so A + bias never wraps. Then clamp(A + b, a_lo, a_hi)
        = clamp(A, a_lo - b, a_hi - b) + b, and ((A + b) * mult + c) = A * mult + (c + b * mult):
        the bias add (one pass over the int32 accumulators) disappears. Taken only where, for every
        channel, the constant and A * mult (+ the constant) stay in int32 over the clamped image of
        [-reach, reach] (monotone in A: checked at its ends, exact Python integers)."""
        if self.i32 is None or self.fused is not None:
            return None
        rows = self._i32_rows * len(bias) if len(self._i32_rows) == 1 else self._i32_rows
        if len(rows) != len(bias):
            return None
        los, his, cs = [], [], []
        for (mu, _sh, a_lo, a_hi, c), b, r in zip(rows, (int(v) for v in bias), (int(v) for v in reach),
                                                    strict=True):
            lo_, hi_ = max(I32_MIN, a_lo - b), min(I32_MAX, a_hi - b)
            if lo_ > hi_:
                return None
            c2 = c + b * mu
            e_lo, e_hi = min(max(-r, lo_), hi_), min(max(r, lo_), hi_)
            vals = (c2, e_lo * mu, e_hi * mu, e_lo * mu + c2, e_hi * mu + c2)
            if min(vals) < I32_MIN or max(vals) > I32_MAX:
                return None
            los.append(lo_), his.append(hi_), cs.append(c2)
        mult, _c, shift = self.i32
        if self.jit:  # the fused CPU kernel's per-channel int32 vectors
            n = len(bias)
            return ("jit", *(np.asarray(v, dtype=np.int32) for v in (los, his)),
                    *(_np_vec(v, n) for v in (mult, cs, shift)))
        t = functools.partial(torch.tensor, dtype=torch.int32, device=self.device)
        return t(los), t(his), t(cs), mult, shift

    @staticmethod
    def run_folded(acc: torch.Tensor, fold) -> torch.Tensor:
        """Requant of acc + bias through `fold_bias`'s form (acc: the caller's fresh GEMM output)."""
        if fold[0] == "jit":
            return _jit_requant(acc, fold[1:])
        lo_t, hi_t, c_t, mult, shift = fold
        return _int32_tail(torch.clamp(acc, lo_t, hi_t, out=acc), mult, c_t, shift)

    def int32_bias(self, acc: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Requant of `acc + bias` (int32, the bias per channel, summed with int32 wrap-around as the
        spec's wrap32). `acc` is the caller's fresh GEMM output: it may be modified in place."""
        if self.fused is not None:
            return self.fused(acc, bias=bias)
        return self.int32(acc.add_(bias))  # int32 + int32 wraps mod 2^32

    def int32_(self, acc: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`int32(acc)` for an accumulator the caller owns (a fresh GEMM output, a temporary): the
        all-int32 form clamps and finishes in place, so no int32 temporary is allocated; with
        `out` (int8, acc's shape) the result is written there and returned."""
        if self.jit and self.pre is not None and self.i32 is not None:
            return _jit_requant(acc, self._vecs(acc.shape[-1]), out)
        if self.fused is None and self.pre is not None and self.i32 is not None:
            return _int32_tail(torch.clamp(acc, *self.pre, out=acc), *self.i32, out=out)
        y = self.int32(acc)
        return y if out is None else out.copy_(y)

    def scalar_i32(self) -> tuple[int, int, int, int, int] | None:
        """(a_lo, a_hi, mult, c, shift) of a per-tensor pre-clamped int32 form (the fused CPU
        kernels' scalar operands), or None."""
        if not self.jit or self.pre is None or self.i32 is None or not isinstance(self.pre[0], int):
            return None
        mult, c, shift = self.i32
        if not isinstance(mult, int) or not isinstance(shift, int) or c.numel() != 1:
            return None
        return int(self.pre[0]), int(self.pre[1]), mult, int(c.reshape(-1)[0]), shift

    def _vecs(self, n: int) -> tuple:
        """(a_lo, a_hi, mult, c, shift) of the pre-clamped int32 form as int32 vectors over n
        channels (the fused CPU kernel's operands), made once per n."""
        v = self._jit_vecs.get(n)
        if v is None:
            v = self._jit_vecs[n] = tuple(_np_vec(p, n) for p in (*self.pre, *self.i32))
        return v

    def int32(self, acc: torch.Tensor) -> torch.Tensor:
        """Requant of an int32 tensor holding the exact accumulator (never modified)."""
        if self.fused is not None:
            return self.fused(acc)
        if self.jit and self.pre is not None and self.i32 is not None:
            return _jit_requant(acc, self._vecs(acc.shape[-1]))
        if self.pre is None:
            return self(acc.to(torch.float64) if self.fp64 or self.f53 is not None else acc)
        if self.i32 is not None:  # exact integers throughout: (A*mult + c) >> shift, no overflow
            return _int32_tail(torch.clamp(acc, *self.pre), *self.i32)
        a = torch.clamp(acc, *self.pre).to(torch.float64)
        # c + A*m in one pass (one rounding if fused, two if not: the proof covers both)
        if isinstance(self.m, float):
            torch.add(self.c_t, a, alpha=self.m, out=a)
        else:
            torch.addcmul(self.c_t, a, self.m, out=a)
        if self.floor:
            a.floor_()
        return a.to(torch.int8)


def _np_vec(v, n: int) -> np.ndarray:
    """An int, or a one-element or [n] tensor or list, as an int32 numpy vector of n entries (the
    int32 forms' parameters: each checked to lie in int32 where the form is made)."""
    if isinstance(v, (torch.Tensor, list, tuple)):
        a = (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).astype(np.int64).reshape(-1)
        a = np.full(n, int(a[0]), dtype=np.int64) if a.size == 1 else a
    else:
        a = np.full(n, int(v), dtype=np.int64)
    if a.size != n or a.min() < I32_MIN or a.max() > I32_MAX:
        raise ValueError("a requant parameter outside int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _jit_requant(acc: torch.Tensor, vecs: tuple, out: torch.Tensor | None = None) -> torch.Tensor:
    """The pre-clamped int32 requant of int32 `acc` (never modified) in one pass of the fused CPU
    kernel (kernels_cpu.requant_i32), into `out` (int8, acc's shape) or a new tensor."""
    n = acc.shape[-1]
    if out is None or not out.is_contiguous():
        y = torch.empty(acc.shape, dtype=torch.int8)
        _jit_requant(acc, vecs, y)
        return y if out is None else out.copy_(y)
    a = acc.reshape(-1, n)
    kernels_cpu.requant_i32(a.numpy(), out.view(-1, n).numpy(), *vecs)
    return out


def _f53_form(mult: int, shift: int, zp: int, lo: int, hi: int):
    """(a_lo, a_hi, mult 2^-shift, c' 2^-shift, lo) of a per-tensor requant in float64, or None.
    After the pre-clamp of A to [a_lo, a_hi] (docs/protocol.md 2.4; needs 0 < mult <= 2^shift),
    y = floor((A*mult + c) / 2^shift) with c = 2^(shift-1) + zp*2^shift, already in [lo, hi];
    shifting by -lo, y - lo = floor(N / 2^shift) with N = A*mult + c' >= 0, c' = c - lo*2^shift.
    The kernel computes A * m + c2 with m = mult 2^-shift and c2 = c' 2^-shift (both exact: an
    integer below 2^53 times a power of two). The exact values of A*m, c2 and their sum are the
    integers A*mult, c' and N scaled by 2^-shift: when each of those integers is at most 2^53 in
    magnitude, each exact value is representable (53 significant bits, no underflow) and every
    IEEE operation returns it as is, fused or not. The result is in [0, hi - lo + 1) with
    hi - lo + 1 <= 256, so the uint8 cast's truncation is the floor. A*mult and N are monotone in
    A: checked at a_lo and a_hi with exact integers. Taken for shifts above FP64_MAX_SHIFT (the
    31-bit multipliers of the exporter's layernorm, shift 45: (hi - lo + 1) 2^45 <= 2^53)."""
    if not 0 < mult <= 1 << shift:
        return None
    b = pre_clamp_bounds(mult, shift, zp, lo, hi)
    if b is None:
        return None
    a_lo, a_hi = b
    c = (1 << (shift - 1)) + (zp - lo) * (1 << shift)
    vals = (c, a_lo * mult, a_hi * mult, a_lo * mult + c, a_hi * mult + c)
    if max(abs(v) for v in vals) > 1 << 53 or a_lo * mult + c < 0:
        return None
    scale = 2.0**-shift
    return float(a_lo), float(a_hi), mult * scale, torch.tensor(c * scale, dtype=torch.float64), lo


def pre_clamp_bounds(mult: int, shift: int, zp: int, lo: int, hi: int) -> tuple[int, int] | None:
    """[a_lo, a_hi] within int32: the smallest A whose requant k(A) = floor((A*mult + 2^(shift-1)) /
    2^shift) + zp is >= lo and the largest with k(A) <= hi (exact integer arithmetic; mult > 0).
    None when no int32 A reaches [lo, hi] (every result saturates to one bound)."""
    half, one = 1 << (shift - 1), 1 << shift
    a_lo = -((half - (lo - zp) * one) // mult)  # ceil(((lo - zp) * 2^s - 2^(s-1)) / mult)
    a_hi = ((hi - zp + 1) * one - half - 1) // mult
    if a_lo > I32_MAX or a_hi < I32_MIN or a_lo > a_hi:
        return None
    return max(I32_MIN, a_lo), min(I32_MAX, a_hi)


def _int32_tail(a: torch.Tensor, mult, c: torch.Tensor, shift, out: torch.Tensor | None = None) -> torch.Tensor:
    """(a*mult + c) >> shift as int8, in place on `a` (int32, already clamped; mult and shift ints
    or per-channel tensors, c a tensor): the last passes of both int32 forms. With `out` (int8, a's
    shape) the cast writes there (one pass fewer than a cast and a copy); the values are in
    [lo, hi], so the cast is exact either way."""
    if isinstance(mult, int):
        torch.add(c, a, alpha=mult, out=a)
    else:
        torch.addcmul(c, a, mult, out=a)
    a.bitwise_right_shift_(shift)
    return a.to(torch.int8) if out is None else out.copy_(a)


def _int32_form(rows: list[tuple[int, int, int, int, int]], device: torch.device):
    """(mult, c, shift) of the pre-clamped requant in int32 arithmetic, or None where some value
    could leave int32. `rows` are per channel (mult, shift, a_lo, a_hi, c). After the clamp to
    [a_lo, a_hi], k(A) = ((A*mult + c) >> shift) with c = 2^(shift-1) + zp*2^shift (adding a
    multiple of 2^shift commutes with the floor division), exactly the spec's integers as long as
    A*mult and A*mult + c stay in int32 for every A in the clamp range. Both are monotone in A
    (mult > 0), so checking them at a_lo and a_hi (exact Python integers) covers every A. The
    export keeps shift <= 23 where the multiplier keeps >= 11 bits (quant.requant_multipliers), so
    (hi - zp + 1) * 2^shift and the rest fit for every int8 zp, lo, hi (docs/protocol.md 2.4)."""
    for mu, sh, a_lo, a_hi, c in rows:
        vals = (a_lo * mu, a_hi * mu, a_lo * mu + c, a_hi * mu + c, c)
        if sh > 30 or min(vals) < I32_MIN or max(vals) > I32_MAX:
            return None
    mults, shifts, _, _, cs = zip(*rows, strict=True)

    def vec(v):
        return int(v[0]) if len(set(v)) == 1 else torch.tensor(v, dtype=torch.int32, device=device)
    c = torch.tensor(cs[0], dtype=torch.int32, device=device) if len(set(cs)) == 1 else vec(cs)
    return vec(mults), c, vec(shifts)


def requant_of(d: OpDescriptor, qp: np.ndarray | None, device: torch.device) -> Requant:
    q = d.requant
    if q.mode == ReqMode.PER_CHANNEL:
        return Requant(qp[:, 0], qp[:, 1], q.zp, q.lo, q.hi, device)
    return Requant(q.mult, q.shift, q.zp, q.lo, q.hi, device)
