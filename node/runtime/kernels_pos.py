"""Torch kernels of the position and selection ops of the integer transformer set (docs/protocol.md
2.2.3 rope, 2.2.4 topk): exact integer semantics on whole tensors, the same bits on CPU and CUDA
(int64 arithmetic, no float, no atomics). Dispatched from kernels._transformer_op.

Adapter code (imports torch); imported by kernels only.
"""

from __future__ import annotations

import torch

from gpumesh.client.core.ops.reference import ROPE_ONE
from gpumesh.client.core.ops.types import OpDescriptor
from gpumesh.node.runtime.requant import requant


def rope(d: OpDescriptor, x: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over the last axis of int8 [.., T, D] (docs/protocol.md 2.2.3)."""
    return prep_rope(d, cs, x.device)([x])


def prep_rope(d: OpDescriptor, cs, device: torch.device):
    """Rope with its table prepared once (a weight: stacking.CONST_INPUTS): the rows off .. off + T - 1
    clamped to +-2^15, as int64 cos and sin [T, D/2]. The closure reads xs[0]: row t of each [T, D]
    block has position t + off (stacked units are whole blocks, so they keep their positions);
    pairs (k, k + D/2) rotated in int64 (|acc| < 2^24), then the int64 requant."""
    t, dd = d.out.shape[-2], d.out.shape[-1]
    h, off, zp, q = dd // 2, d.attr("off"), d.attr("x_zp"), d.requant
    tab = torch.as_tensor(cs[off : off + t], device=device).to(torch.int64).clamp_(-ROPE_ONE, ROPE_ONE)
    c, s = tab[..., 0].contiguous(), tab[..., 1].contiguous()  # [T, D/2]

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0]
        v = x.reshape(-1, t, dd).to(torch.int64) - zp
        a, b = v[..., :h], v[..., h:]
        acc = torch.cat([a * c - b * s, b * c + a * s], dim=-1)
        return requant(acc, q.mult, q.shift, q.zp, q.lo, q.hi).reshape(x.shape)

    return run


#: Bits of a position in topk's sort key: positions are below 2^28 (a tensor has at most 2^28 bytes).
_POS_BITS = 28


def topk(d: OpDescriptor, x: torch.Tensor) -> torch.Tensor:
    """The k best entries of each row or chunk (docs/protocol.md 2.2.4), ordered by value descending,
    then position ascending. One int64 key per entry, (v + 128) * 2^28 + (2^28 - 1 - position):
    distinct keys, so torch.topk's sorted result is fully determined (no tie order left to the
    device) and its order is exactly the spec's."""
    k, q, pairs = d.attr("k"), d.attr("q"), d.attr("pairs")
    if pairs:
        vals, ids = x[..., 0].to(torch.int64).clamp_(-128, 127), x[..., 1]
    else:
        vals, ids = x.to(torch.int64), None
    n = vals.shape[-1]
    pos = torch.arange(n, dtype=torch.int64, device=x.device)
    key = ((vals + 128) << _POS_BITS) + ((1 << _POS_BITS) - 1 - pos)
    if q == 0:
        p = torch.topk(key, k, dim=-1).indices
        return (p if ids is None else ids.gather(-1, p)).to(torch.int32)
    g = -(-n // q)
    key = torch.nn.functional.pad(key, (0, g * q - n), value=-1).reshape(*key.shape[:-1], g, q)
    top, local = torch.topk(key, k, dim=-1)  # a padded position (-1) ranks below every entry
    real = top >= 0
    p = local + q * torch.arange(g, dtype=torch.int64, device=x.device).unsqueeze(-1)
    if ids is None:
        index = p
    else:
        index = ids.to(torch.int64).gather(-1, p.clamp(max=n - 1).reshape(*p.shape[:-2], -1)).reshape(p.shape)
    value = torch.where(real, (top >> _POS_BITS) - 128, -128)
    index = torch.where(real, index, -1)
    return torch.stack([value, index], dim=-1).to(torch.int32)
