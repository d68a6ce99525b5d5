"""Torch kernels of the position and selection ops of the integer transformer set (docs/protocol.md
2.2.3 rope, 2.2.4 topk): exact integer semantics on whole tensors, the same bits on CPU and CUDA
(int64 arithmetic, no float, no atomics). Dispatched from kernels._transformer_op.

Adapter code (imports torch); imported by kernels only.
"""

from __future__ import annotations

import torch

from gpumesh.client.core.ops.reference import ROPE_ONE
from gpumesh.client.core.ops.types import OpDescriptor
from gpumesh.node.runtime.requant import requant_of


def rope(d: OpDescriptor, x: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over the last axis of int8 [.., T, D] (docs/protocol.md 2.2.3)."""
    return prep_rope(d, cs, x.device)([x])


def prep_rope(d: OpDescriptor, cs, device: torch.device):
    """Rope with its table prepared once (a weight: stacking.CONST_INPUTS): the rows off .. off + T - 1
    clamped to +-2^15, as float32 cos and sin [T, D/2]. The closure reads xs[0]: row t of each [T, D]
    block has position t + off (stacked units are whole blocks, so they keep their positions).
    Exact in float32: every product a*c is an integer of magnitude <= 255 * 2^15 < 2^23 and every
    a*c - b*s one of magnitude <= 2 * 255 * 2^15 < 2^24, all representable, so no rounding happens
    on any device (elementwise ops have no TF32); then the int32 accumulator's prepared requant
    (requant.Requant.int32, exact: docs/protocol.md 2.4)."""
    t, dd = d.out.shape[-2], d.out.shape[-1]
    h, off, zp = dd // 2, d.attr("off"), d.attr("x_zp")
    tab = torch.as_tensor(cs[off : off + t], device=device).to(torch.int64).clamp_(-ROPE_ONE, ROPE_ONE)
    c, s = tab[..., 0].to(torch.float32).contiguous(), tab[..., 1].to(torch.float32).contiguous()  # [T, D/2]
    req = requant_of(d, None, device)

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0]
        v = x.reshape(-1, t, dd).to(torch.float32)
        if zp:
            v.sub_(zp)
        a, b = v[..., :h], v[..., h:]
        acc = torch.cat([a * c - b * s, b * c + a * s], dim=-1)
        return req.int32(acc.to(torch.int32)).reshape(x.shape)

    return run


def topk(d: OpDescriptor, x: torch.Tensor) -> torch.Tensor:
    """The k best entries of each row or chunk (docs/protocol.md 2.2.4), ordered by value descending,
    then position ascending. One integer key per entry, (v + 128) * 2^B + (2^B - 1 - p) with p the
    position inside its chunk (the row when q = 0) and 2^B > the chunk length: distinct keys, so
    torch.topk's sorted result is fully determined (no tie order left to the device) and its order
    is exactly the spec's. int32 keys while 8 + B <= 31 (every valid descriptor: chunks and rows of
    at most 16,384), int64 beyond. A short last chunk is padded with negative keys, which rank below
    every entry and come out as (-128, -1)."""
    k, q, pairs = d.attr("k"), d.attr("q"), d.attr("pairs")
    if pairs:
        vals, ids = x[..., 0].clamp(-128, 127), x[..., 1]
    else:
        vals, ids = x, None
    n = vals.shape[-1]
    size = q or n
    g = -(-n // size)
    bits = max(size - 1, 1).bit_length()
    kdt = torch.int32 if bits <= 23 else torch.int64
    u = vals.to(kdt) + 128
    if g * size != n:
        u = torch.nn.functional.pad(u, (0, g * size - n), value=-1)
    u = u.reshape(*u.shape[:-1], g, size)
    local = torch.arange(size, dtype=kdt, device=x.device)
    key = (u << bits).add_((1 << bits) - 1 - local)  # a padded entry: (-1 << B) + ... < 0
    top, li = torch.topk(key, k, dim=-1)
    p = li + size * torch.arange(g, dtype=torch.int64, device=x.device).unsqueeze(-1)  # row positions
    if ids is None:
        index = p
    else:
        index = ids.to(torch.int64).gather(-1, p.clamp(max=n - 1).reshape(*p.shape[:-2], -1)).reshape(p.shape)
    if q == 0:
        return index.squeeze(-2).to(torch.int32)
    real = top >= 0
    value = torch.where(real, (top >> bits) - 128, -128).to(torch.int64)
    index = torch.where(real, index, -1)
    return torch.stack([value, index], dim=-1).to(torch.int32)
