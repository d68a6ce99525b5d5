"""Fused requant and add kernels for CUDA, written in Triton. The requant: the spec's integer formula (docs/protocol.md
2.1) in ONE pass over the int32 accumulator, per element and channel c (the last axis):

    s = wrap32(A + bias_c)                      (optional: the linear's folded bias)
    y = clamp(((s * mult_c + 2^(shift_c - 1)) >> shift_c) + zp, lo, hi)  -> int8

in int64 arithmetic (|s * mult| < 2^62, `>>` arithmetic on signed integers): exact by
construction, no floating point at all. It replaces five to seven elementwise torch passes on the
GPU, where the requant is memory-bound. The add op likewise, in int64 (|t| < 2^40). Imported only on CUDA; `available()` is False when Triton
(shipped with torch's CUDA wheels) cannot be imported, and the torch paths are used.

Adapter code; imported by gpumesh.node.runtime.requant.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

_BLOCK = 1024


def available() -> bool:
    """Triton imports and GPUMESH_NO_TRITON is unset (or 0): the operator's switch back to the
    torch paths, and how bench/gpu_check.py verifies those paths on a machine that has Triton."""
    return triton is not None and os.environ.get("GPUMESH_NO_TRITON", "0") in ("", "0")


if triton is not None:

    @triton.jit
    def _requant_kernel(acc_ptr, bias_ptr, mult_ptr, shift_ptr, out_ptr, n, bias_channels, channels, zp, lo,
                        hi, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        c = offs % channels  # the requant's channel (0 when per tensor)
        a = tl.load(acc_ptr + offs, mask=mask, other=0).to(tl.int64)
        if HAS_BIAS:  # the bias is per output channel whatever the requant mode
            a = a + tl.load(bias_ptr + offs % bias_channels, mask=mask, other=0).to(tl.int64)
            # wrap32, as the int32 sum does: truncate to int32, sign-extend back (no unsigned
            # constants: a literal like 2^32 - 1 would be typed uint32 and turn the math unsigned)
            a = a.to(tl.int32).to(tl.int64)
        m = tl.load(mult_ptr + c, mask=mask, other=0)
        s = tl.load(shift_ptr + c, mask=mask, other=1)
        one = tl.full([BLOCK], 1, tl.int64)
        v = (a * m + (one << (s - 1))) >> s
        v = tl.minimum(tl.maximum(v + zp, lo), hi)
        tl.store(out_ptr + offs, v.to(tl.int8), mask=mask)


if triton is not None:

    @triton.jit
    def _add_kernel(a_ptr, b_ptr, out_ptr, n, za, zb, ma, mb, shift, zy, lo, hi, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        a = tl.load(a_ptr + offs, mask=mask, other=0).to(tl.int64)
        b = tl.load(b_ptr + offs, mask=mask, other=0).to(tl.int64)
        t = (a - za) * ma + (b - zb) * mb  # |t| < 2^40
        one = tl.full([BLOCK], 1, tl.int64)
        v = (t + (one << (shift - 1))) >> shift
        v = tl.minimum(tl.maximum(v + zy, lo), hi)
        tl.store(out_ptr + offs, v.to(tl.int8), mask=mask)


def add(a: torch.Tensor, b: torch.Tensor, za: int, zb: int, ma: int, mb: int, shift: int, zy: int, lo: int,
        hi: int) -> torch.Tensor:
    """The spec's add op (docs/protocol.md 2.2) of two int8 CUDA tensors of one shape, in one pass."""
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty(a.shape, dtype=torch.int8, device=a.device)
    n = a.numel()
    if n:
        _add_kernel[(triton.cdiv(n, _BLOCK),)](a, b, out, n, za, zb, ma, mb, shift, zy, lo, hi, BLOCK=_BLOCK)
    return out


def requant(acc: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor, zp: int, lo: int, hi: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """int8 requant of an int32 CUDA tensor; `mult`/`shift` int64 [C] (C = 1: per tensor) along the
    last axis; `bias` int32 [N] (the last axis' length, whatever C is) added first with int32
    wrap-around."""
    acc = acc.contiguous()
    out = torch.empty(acc.shape, dtype=torch.int8, device=acc.device)
    n = acc.numel()
    if n:
        grid = (triton.cdiv(n, _BLOCK),)
        _requant_kernel[grid](acc, bias if bias is not None else acc, mult, shift, out, n,
                              bias.numel() if bias is not None else 1, mult.numel(), zp, lo, hi,
                              HAS_BIAS=bias is not None, BLOCK=_BLOCK)
    return out
