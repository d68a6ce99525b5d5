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
    """Rotary embedding over the last axis of int8 [.., T, D] (docs/protocol.md 2.2.3): row t of each
    [T, D] block has position t + off (stacked units are whole blocks, so they keep their positions);
    pairs (k, k + D/2) rotated by the clamped (cos, sin) entries of that position, int64 throughout
    (|acc| < 2^24), then the int64 requant."""
    t, dd = d.out.shape[-2], d.out.shape[-1]
    h, off = dd // 2, d.attr("off")
    v = x.reshape(-1, t, dd).to(torch.int64) - d.attr("x_zp")
    tab = cs[off : off + t].to(torch.int64).clamp_(-ROPE_ONE, ROPE_ONE)  # [T, D/2, 2]
    c, s = tab[..., 0], tab[..., 1]
    a, b = v[..., :h], v[..., h:]
    acc = torch.cat([a * c - b * s, b * c + a * s], dim=-1)
    q = d.requant
    return requant(acc, q.mult, q.shift, q.zp, q.lo, q.hi).reshape(x.shape)
