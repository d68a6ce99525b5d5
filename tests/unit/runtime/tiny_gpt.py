"""A tiny byte-level causal transformer (GPT-style, pre-norm) in the styles the export supports:
attention written as explicit matmul + causal-masked softmax, `F.scaled_dot_product_attention`
(also with GPT-NeoX's fused per-head qkv, attn="neox"), or nn.MultiheadAttention; LayerNorm or RMSNorm; a GELU MLP or SwiGLU; learned positions or rotary
ones (Llama / GPT-NeoX rotate-half, from an `inv_freq` buffer or precomputed cos / sin buffers); a
final norm and LM head. Text: the standard library's own sources (every Python has them), read as bytes.
Shared by the export tests."""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """A model's own RMSNorm (Llama-style), as posters write it."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    """Llama's / GPT-NeoX's pairing: column k with k + D/2."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class Rotary(nn.Module):
    """Rotary position embedding as posters write it. "rope": HF Llama's form (cos and sin computed
    in forward from an `inv_freq` buffer and the positions, [1, 1, T, Dh], rotate_half by slicing);
    "rope_cached": precomputed cos / sin buffers cut to T ([T, Dh]), the halves by chunk; "rope_neox":
    HF GPT-NeoX's apply_rotary_pos_emb (q[..., :rotary_dim] rotated, q[..., rotary_dim:] concatenated
    back: here every column, the second part empty)."""

    def __init__(self, dh: int, ctx: int, form: str, base: float = 10000.0) -> None:
        super().__init__()
        self.form = form
        inv_freq = 1.0 / (base ** (torch.arange(0, dh, 2).float() / dh))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if form == "rope_cached":
            emb = torch.outer(torch.arange(ctx).float(), inv_freq).repeat(1, 2)
            self.register_buffer("cos_cached", emb.cos(), persistent=False)
            self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, q, k):
        t = q.size(-2)
        if self.form == "rope_neox":  # HF GPT-NeoX: the first rotary_dim columns rotated, the rest passed
            emb = torch.outer(torch.arange(t, device=q.device).float(), self.inv_freq).repeat(1, 2)
            cos, sin = emb.cos()[None, None], emb.sin()[None, None]
            rd = cos.shape[-1]
            (q_rot, q_pass), (k_rot, k_pass) = (q[..., :rd], q[..., rd:]), (k[..., :rd], k[..., rd:])
            return (torch.cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], dim=-1),
                    torch.cat([k_rot * cos + rotate_half(k_rot) * sin, k_pass], dim=-1))
        if self.form == "rope_cached":
            cos, sin = self.cos_cached[:t], self.sin_cached[:t]
            half = lambda x: torch.cat([-x.chunk(2, dim=-1)[1], x.chunk(2, dim=-1)[0]], dim=-1)  # noqa: E731
            return q * cos + half(q) * sin, k * cos + half(k) * sin
        pos = torch.arange(t, device=q.device).float()
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None].to(q.dtype), emb.sin()[None, None].to(q.dtype)
        return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(x, n_rep: int):
    """transformers' expansion of [B, Hkv, T, Dh] to [B, Hkv * n_rep, T, Dh] (head h is kv head h // n_rep)."""
    b, hkv, t, dh = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, hkv, n_rep, t, dh).reshape(b, hkv * n_rep, t, dh)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int, style: str, pos: str = "learned", kv_heads: int | None = None,
                 gqa: str = "repeat_kv") -> None:
        super().__init__()
        self.h, self.style = heads, style
        self.rotary = Rotary(d // heads, ctx, pos) if pos != "learned" else None
        self.kv, self.gqa = kv_heads, gqa
        if kv_heads is not None:  # grouped-query attention: k and v of kv_heads heads
            dkv = kv_heads * (d // heads)
            if gqa == "fused":  # one projection split in three (Phi-3, GPT-BigCode)
                self.qkv = nn.Linear(d, d + 2 * dkv)
            else:  # Llama, Mistral, Qwen: three projections
                self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(d, dkv, bias=False), nn.Linear(d, dkv, bias=False)
            self.proj = nn.Linear(d, d)
            self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx))
            return
        if style == "mha":
            self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
            self.register_buffer("causal", torch.ones(ctx, ctx, dtype=torch.bool).triu(1))
            return
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx))

    def forward(self, x):
        b, t, d = x.size()
        if self.style == "mha":
            return self.mha(x, x, x, attn_mask=self.causal[:t, :t], need_weights=False)[0]
        if self.kv is not None:
            return self.proj(self._gqa(x).transpose(1, 2).contiguous().view(b, t, d))
        if self.style == "neox":  # GPT-NeoX's fused qkv: per head [q | k | v]
            q, k, v = self.qkv(x).view(b, t, self.h, 3 * (d // self.h)).transpose(1, 2).chunk(3, dim=-1)
        else:
            q, k, v = self.qkv(x).split(d, dim=2)
            q, k, v = (y.view(b, t, self.h, d // self.h).transpose(1, 2) for y in (q, k, v))
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.style in ("sdpa", "neox"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, d))

    def _gqa(self, x):
        """q of H heads, k and v of kv_heads, expanded as `gqa` says: "repeat_kv" (after rope, as
        Llama does), "before_rope" (repeat_kv, then rope on the expanded k), "repeat_interleave",
        "enable_gqa" (SDPA expands them), "fused" (one projection split, then repeat_kv), "tile" (the
        kv heads repeated as a block: head h is kv head h % Hkv)."""
        b, t, d = x.size()
        dh = d // self.h
        if self.gqa == "fused":
            q, k, v = self.qkv(x).split([d, self.kv * dh, self.kv * dh], dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, t, -1, dh).transpose(1, 2)
        k, v = (y.view(b, t, -1, dh).transpose(1, 2) for y in (k, v))
        n_rep = self.h // self.kv
        if self.gqa == "before_rope":
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.gqa in ("repeat_kv", "fused"):
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        elif self.gqa == "tile":  # [k_0 .. k_Hkv-1] repeated n_rep times: head h is kv head h % Hkv
            k, v = (y[:, None].expand(b, n_rep, self.kv, t, dh).reshape(b, self.h, t, dh) for y in (k, v))
        elif self.gqa == "repeat_interleave":
            k, v = torch.repeat_interleave(k, n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        if self.style == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.gqa == "enable_gqa")
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        return F.softmax(att, dim=-1) @ v


class MLP(nn.Module):
    def __init__(self, d: int, swiglu: bool) -> None:
        super().__init__()
        self.swiglu = swiglu
        if swiglu:
            self.w1, self.w3, self.w2 = nn.Linear(d, 2 * d, bias=False), nn.Linear(d, 2 * d, bias=False), nn.Linear(2 * d, d, bias=False)
            self.act = nn.SiLU()
        else:
            self.fc, self.act, self.proj = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x):
        if self.swiglu:
            return self.w2(self.act(self.w1(x)) * self.w3(x))
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int, attn: str, rms: bool, swiglu: bool, pos: str = "learned",
                 kv_heads: int | None = None, gqa: str = "repeat_kv") -> None:
        super().__init__()
        norm = (lambda: RMSNorm(d)) if rms else (lambda: nn.LayerNorm(d))
        self.ln1, self.ln2, self.mlp = norm(), norm(), MLP(d, swiglu)
        self.attn = Attention(d, heads, ctx, attn, pos, kv_heads, gqa)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, layers: int = 2, d: int = 64, heads: int = 4, ctx: int = 32, vocab: int = 256,
                 attn: str = "explicit", rms: bool = False, swiglu: bool = False, pos: str = "learned",
                 kv_heads: int | None = None, gqa: str = "repeat_kv") -> None:
        """pos: "learned" (an Embedding of the positions added to the tokens), or rotary positions
        applied to q and k in every layer ("rope", "rope_cached": Rotary) and none at the input.
        kv_heads: grouped-query attention (k and v of kv_heads heads; 1: multi-query), expanded to
        the query heads as `gqa` says (Attention._gqa); None: every head has its own k and v."""
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d) if pos == "learned" else None
        self.blocks = nn.ModuleList(Block(d, heads, ctx, attn, rms, swiglu, pos, kv_heads, gqa) for _ in range(layers))
        self.ln_f = RMSNorm(d) if rms else nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        b, t = idx.shape
        x = self.tok(idx)
        if self.pos is not None:
            x = x + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def stdlib_bytes(names: list[str]) -> bytes:
    root = Path(sysconfig.get_paths()["stdlib"])
    return b"".join((root / n).read_bytes() for n in names)


def windows(data: bytes, ctx: int, count: int, seed: int) -> torch.Tensor:
    """`count` windows of ctx bytes at seeded random offsets, int64 [count, ctx]."""
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(t) - ctx - 1, (count,), generator=g)
    return torch.stack([t[s : s + ctx] for s in starts.tolist()])


def train(model: nn.Module, data: bytes, steps: int, ctx: int, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    """A few hundred Adam steps of next-byte prediction (seconds on two cores)."""
    torch.manual_seed(seed)
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        s = torch.randint(0, len(t) - ctx - 1, (32,), generator=g)
        x = torch.stack([t[i : i + ctx] for i in s.tolist()])
        y = torch.stack([t[i + 1 : i + ctx + 1] for i in s.tolist()])
        loss = F.cross_entropy(model(x).reshape(-1, model.head.out_features), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def train_one_thread(model: nn.Module, data: bytes, steps: int, ctx: int, seed: int = 0) -> nn.Module:
    """train() seeded on one thread (the same weights on every machine's thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(model, data, steps, ctx, seed=seed)
    finally:
        torch.set_num_threads(threads)


def generation_units(model: nn.Module, folder: Path, prompt_len: int, generate: int, prompts: int = 2):
    """The model's generation program (unit batch 1, calibrated on shlex.py) saved in `folder` and
    loaded back, and `prompts` held-out prompts (glob.py) as its int8 units: (bundle, units)."""
    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.export_generate import export_generation
    from gpumesh.node.runtime.files import load_program, save_program

    calib = windows(stdlib_bytes(["shlex.py"]), prompt_len + generate - 1, 16, 1)
    save_program(folder, *export_generation(model, calib, 1, generate))
    bundle = load_program(folder)
    return bundle, quantize_units(bundle.program, windows(stdlib_bytes(["glob.py"]), prompt_len, prompts, 2).numpy())
