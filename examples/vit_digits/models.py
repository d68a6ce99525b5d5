"""A small vision transformer for sklearn's bundled 8x8 digits (the poster's own code: run locally
to train and export, never sent to workers). 2x2 patches (16 tokens) embedded by a strided Conv2d,
learned positions, two pre-norm blocks (LayerNorm, 4-head causal-free self-attention through
F.scaled_dot_product_attention, GELU MLP), a final LayerNorm, the mean over the tokens and a Linear
classifier. `gpumesh program build --model examples/vit_digits/models.py:vit` finds the factory."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

D, HEADS, DEPTH, PATCH = 32, 4, 2, 2
TOKENS = (8 // PATCH) ** 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.qkv, self.proj = nn.LayerNorm(D), nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.ln2, self.fc, self.act, self.out = nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (y.view(b, t, HEADS, d // HEADS).transpose(1, 2) for y in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(self.act(self.fc(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, D, PATCH, stride=PATCH)
        self.flat = nn.Flatten(2)
        self.pos = nn.Parameter(torch.zeros(1, TOKENS, D))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x):
        x = self.flat(self.patch(x)).transpose(1, 2) + self.pos  # [B, 16, D]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x).mean(dim=1))


def vit() -> nn.Module:
    return ViT()
