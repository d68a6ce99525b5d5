"""A byte-level GPT (the poster's own code: run locally to train and export, never sent to
workers): 4 pre-norm blocks, d_model 256, 4 heads, context 256, vocabulary 256 (bytes), learned
positions, attention written as explicit matmul + causal-masked softmax, a GELU MLP (4x), a final
LayerNorm and an LM head; 3,356,160 parameters. `gpumesh program build --model
examples/bytegpt/model.py:gpt` finds the factory."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS, D, HEADS, CTX, VOCAB = 4, 256, 4, 256, 256


class Attention(nn.Module):
    def __init__(self, d: int = D, heads: int = HEADS, ctx: int = CTX) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx), persistent=False)

    def forward(self, x):
        b, t, d = x.size()
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int = D, heads: int = HEADS, ctx: int = CTX) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), Attention(d, heads, ctx), nn.LayerNorm(d)
        self.fc, self.act, self.out = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(self.act(self.fc(self.ln2(x))))


class ByteGPT(nn.Module):
    """The byte GPT; other shapes (`bench/bench_textgen.py`'s GPT-2-small shape) keep its layout
    and module names."""

    def __init__(self, layers: int = LAYERS, d: int = D, heads: int = HEADS, ctx: int = CTX,
                 vocab: int = VOCAB) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, ctx) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def gpt() -> ByteGPT:
    """The factory `program build --model` calls (weights come from --state-dict)."""
    return ByteGPT()
