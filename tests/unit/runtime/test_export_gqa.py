"""Export of grouped-query and multi-query attention (export_graph.expand_kv_heads, docs/protocol.md
2.6): k and v projected to Hkv < H heads and expanded to H by transformers' `repeat_kv`,
`repeat_interleave` or SDPA's `enable_gqa` export with the k / v projection's rows duplicated
(head h reads kv head h // n_rep) and no op for the expansion. The program is exactly that of the
same model written with H kv heads holding the duplicated rows, whatever the form of the expansion
and whether it comes before or after rope; int8 greedy next bytes agree with the float model like
the other styles; the generation program (its KV cache of H heads) equals the repeated full-window
program bit for bit; what it cannot lower is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.runtime.export import ExportError, export_json, export_model, unsupported
from gpumesh.node.runtime.export_generate import export_generation
from gpumesh.node.runtime.export_graph import expand_kv_heads, trace
from tests.unit.runtime.test_export_generate import N as GEN_N
from tests.unit.runtime.test_export_generate import _bundle, _generate, _prompts, _repeated_full
from tests.unit.runtime.test_export_generate import _calib as _gen_calib
from tests.unit.runtime.test_export_transformer import CTX, TRAIN, UNIT, _agreement, _calib, _held_out, _run
from tests.unit.runtime.tiny_gpt import RMSNorm, TinyGPT, repeat_kv, stdlib_bytes, train_one_thread

LLAMA = dict(attn="sdpa", rms=True, swiglu=True, pos="rope")
FORMS = ["repeat_kv", "before_rope", "repeat_interleave", "enable_gqa", "fused"]


def _gqa(kv_heads: int = 2, gqa: str = "repeat_kv", **style) -> TinyGPT:
    torch.manual_seed(3)
    return TinyGPT(**(style or LLAMA), kv_heads=kv_heads, gqa=gqa).eval()


def _mha_twin(model: TinyGPT) -> TinyGPT:
    """The same model with one k and v head per query head: the k / v rows of kv head h // n_rep
    copied into head h (no expansion in its graph: repeat_kv with n_rep 1 returns k as it is)."""
    heads = model.blocks[0].attn.h
    twin = TinyGPT(**LLAMA, kv_heads=heads).eval()
    state = dict(model.state_dict())
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        dh = a.k.weight.shape[1] // heads
        rows = torch.tensor([g * dh + j for g in (h // (heads // a.kv) for h in range(heads)) for j in range(dh)])
        for p in ("k", "v"):
            state[f"blocks.{i}.attn.{p}.weight"] = getattr(a, p).weight.detach()[rows]
    twin.load_state_dict(state)
    return twin


def _program_form(obj: dict, arrays: dict) -> tuple[list, list]:
    """A program JSON without its names: each op's kind and attributes, each weight's values."""
    return ([(o["op"], o["attrs"]) for o in obj["ops"]], [arrays[w["name"]].tolist() for w in obj["weights"]])


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_gqa_program_is_the_program_of_the_model_with_duplicated_kv_rows(kv_heads):
    """Exact: the same ops, attributes, scales and weight values as the H-kv-head twin."""
    model = _gqa(kv_heads)
    obj, arrays = export_json(model, _calib(), UNIT)
    twin, tarrays = export_json(_mha_twin(model), _calib(), UNIT)
    assert _program_form(obj, arrays) == _program_form(twin, tarrays)
    with torch.no_grad():
        ids = _held_out(4)
        assert torch.equal(model(ids).argmax(-1), _mha_twin(model)(ids).argmax(-1))
    k = next(o for o in obj["ops"] if o["name"] == "blocks.0.attn.k_heads")
    wk = arrays[k["inputs"][1]]
    assert wk.shape == (64, 64)  # H * Dh rows
    heads = wk.reshape(4, 16, 64)
    n_rep = 4 // kv_heads
    for h in range(4):  # head h holds kv head h // n_rep: the rows of the group's first head
        assert np.array_equal(heads[h], heads[h // n_rep * n_rep])
    assert not np.array_equal(heads[0], heads[-1]) or kv_heads == 1


@pytest.mark.parametrize("gqa", FORMS)
def test_every_expansion_form_exports_the_same_program(gqa):
    """repeat_kv after rope (Llama) or before it, repeat_interleave, SDPA's enable_gqa, one fused
    projection split in three: the expansion leaves no op; the rope ops rotate the H-head k."""
    model = _gqa(2, gqa)
    assert unsupported(model, _calib(), UNIT) == []  # program check lists nothing
    obj, arrays = export_json(model, _calib(), UNIT)
    ref, rarrays = export_json(_gqa(2, "repeat_kv"), _calib(), UNIT)
    if gqa == "fused":  # q too comes from a part of the split projection, and the biases differ
        assert [o["op"] for o in obj["ops"]] == [o["op"] for o in ref["ops"]]
    else:
        assert _program_form(obj, arrays) == _program_form(ref, rarrays)
    ropes = [o for o in obj["ops"] if o["op"] == "rope"]
    assert len(ropes) == 4
    assert all(o["op"] not in ("concat", "slice") for o in obj["ops"])


def test_rewritten_graph_computes_the_expanded_values():
    """The rewritten fx graph (projection rows duplicated, expansion gone) gives the model's own
    float outputs; no expand, repeat_interleave or enable_gqa is left."""
    for gqa in [*FORMS, "tile"]:
        model = _gqa(2, gqa)
        ids = _calib()[:UNIT]
        gm = trace(model, ids)
        assert expand_kv_heads(gm) == []
        left = [n for n in gm.graph.nodes if n.target in ("expand", "repeat_interleave", torch.repeat_interleave)
                or n.kwargs.get("enable_gqa")]
        assert left == []
        with torch.no_grad():
            assert torch.allclose(fx.Interpreter(gm).run(ids), model(ids), atol=1e-5), gqa


@pytest.mark.parametrize(("kv_heads", "gqa", "style"), [(2, "repeat_kv", LLAMA), (1, "repeat_kv", LLAMA),
                                                        (2, "enable_gqa", LLAMA), (2, "fused", dict(pos="rope_cached")),
                                                        (2, "tile", LLAMA)])
def test_gqa_agrees_with_float_like_the_other_styles(tmp_path, kv_heads, gqa, style):
    """Seeded random weights, the bar of the other styles (test_export_rope, test_export_transformer)."""
    model = _gqa(kv_heads, gqa, **style)
    prog, arrays = export_model(model, _calib(), UNIT)
    ids = _held_out(16)
    agree, _, _ = _agreement(model, _run(tmp_path, prog, arrays, ids), ids)
    print(f"\nGQA {kv_heads} kv heads, {gqa}, {style}: {len(prog.ops)} ops, agreement {agree:.4f} on {ids.numel()} positions")
    assert agree >= 0.85


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_trained_gqa_agrees_with_float(tmp_path, kv_heads):
    """After 60 seeded Adam steps (one thread, ~2 s), 1,536 held-out positions, the bar of the
    trained rotary GPT (test_export_rope)."""
    torch.manual_seed(0)
    model = train_one_thread(TinyGPT(**LLAMA, kv_heads=kv_heads), stdlib_bytes(TRAIN), 60, CTX)
    prog, arrays = export_model(model, _calib(), UNIT)
    ids = _held_out()
    agree, acc_f, acc_q = _agreement(model, _run(tmp_path, prog, arrays, ids), ids)
    print(f"\ntrained GQA, {kv_heads} kv heads: agreement {agree:.4f}; next-byte accuracy float {acc_f:.4f} int8 {acc_q:.4f}")
    assert acc_f > 0.3 and agree >= 0.95 and acc_q >= acc_f - 0.01


class _PerHeadNorm(nn.Module):
    """Qwen3's attention: RMSNorm over each head's dimension of q and k (before the heads
    transpose), k and v of 2 heads expanded by repeat_kv."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 4)
        self.q_norm, self.k_norm = RMSNorm(4), RMSNorm(4)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q_norm(self.q(x).view(b, t, 4, 4)).transpose(1, 2)
        k = self.k_norm(self.k(x).view(b, t, 2, 4)).transpose(1, 2)
        v = self.v(x).view(b, t, 2, 4).transpose(1, 2)
        y = torch.nn.functional.scaled_dot_product_attention(q, repeat_kv(k, 2), repeat_kv(v, 2), is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, 16))


def test_a_per_head_norm_before_the_expansion_runs_on_the_duplicated_heads(tmp_path):
    torch.manual_seed(5)
    model = _PerHeadNorm().eval()
    with torch.no_grad():
        model.k_norm.weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    x = torch.randn(256, 8, 16)
    assert unsupported(model, x[:64], 4) == []
    prog, arrays = export_model(model, x[:64], 4)
    assert [o.name for o in prog.ops if o.desc.opcode == Opcode.LAYERNORM] == ["q_norm", "k_norm"]
    got = _run(tmp_path, prog, arrays, x[64:])
    with torch.no_grad():
        want = model(x[64:]).argmax(-1).numpy()
    agree = float((got == want).mean())
    print(f"\nper-head norm, GQA: agreement {agree:.4f}")
    assert agree >= 0.9


@pytest.mark.parametrize(("kv_heads", "gqa"), [(2, "repeat_kv"), (1, "enable_gqa")])
def test_gqa_generation_equals_repeated_full_window_program(tmp_path, kv_heads, gqa):
    """The KV cache holds the H duplicated heads; the tokens are bit for bit the full-window
    program's on the growing window."""
    model = _gqa(kv_heads, gqa)
    prompts = _prompts()
    gen = _bundle(tmp_path, "gen", *export_generation(model, _gen_calib(), 4, GEN_N))
    full = _bundle(tmp_path, "full", *export_model(model, _gen_calib(), 4))
    concats = [o for o in gen.program.ops if o.desc.opcode == Opcode.CONCAT and ".kv@" in o.name]
    assert concats and all(o.desc.out.shape[1] == 4 for o in concats)  # [B, H, ., .]: H heads cached
    got = _generate(gen, prompts)
    assert np.array_equal(got, _repeated_full(full, prompts, GEN_N))
    print(f"\nGQA generation, {kv_heads} kv heads ({len(gen.program.ops)} ops, N {GEN_N}): equal to the repeated full-window program "
          f"on all {got.size} tokens")


class _Eager(nn.Module):
    """Attention as transformers' eager path writes it: repeat_kv, scores times the scaling plus an
    additive causal mask, here of `fill` (transformers: torch.finfo(dtype).min, not -inf)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 4)
        self.register_buffer("mask", torch.full((8, 8), fill).triu(1)[None, None])

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)
        k, v = (repeat_kv(f(x).view(b, t, 2, 4).transpose(1, 2), 2) for f in (self.k, self.v))
        att = torch.matmul(q, k.transpose(2, 3)) * 0.5 + self.mask[:, :, :t, :t]
        y = torch.matmul(torch.softmax(att, dim=-1, dtype=torch.float32), v)
        return self.out(y.transpose(1, 2).reshape(b, t, 16))


def test_an_additive_finfo_min_mask_is_the_causal_mask():
    """transformers' eager masks hold finfo.min where they mask: the same program as -inf (it was
    an int8 constant of scale ~2^121 added to the scores: every score rounded to 0)."""
    x = torch.randn(64, 8, 16)
    progs = []
    for fill in (float("-inf"), torch.finfo(torch.float32).min):
        torch.manual_seed(5)
        obj, arrays = export_json(_Eager(fill).eval(), x, 4)
        progs.append(_program_form(obj, arrays))
        assert [o["attrs"]["causal"] for o in obj["ops"] if o["op"] == "softmax"] == [1]
    assert progs[0] == progs[1]


# ---------------------------------------------------------------------------------------------
# Refusals: one line naming the expansion


class _KvReadTwice(nn.Module):
    """k's two heads also feed the output before they are expanded: duplicating the projection
    would change that reader."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 4)
        self.side = nn.Linear(8, 16)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)
        k, v = (f(x).view(b, t, 2, 4).transpose(1, 2) for f in (self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, repeat_kv(k, 2), repeat_kv(v, 2), is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, 16) + self.side(k.transpose(1, 2).reshape(b, t, 8)))


class _KvNotProjected(nn.Module):
    """k and v are the input itself split in heads: there is no projection to duplicate."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.out = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)
        kv = x.view(b, t, 2, 4).transpose(1, 2)
        y = torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return self.out(y.transpose(1, 2).reshape(b, t, 16))


@pytest.mark.parametrize(("model", "d", "why"), [
    (_KvReadTwice, 16, r"grouped-query attention: the heads before the expansion are also read by \w+"),
    (_KvNotProjected, 8, r"grouped-query attention: .*k and v must come from an nn.Linear"),
])
def test_expansions_it_cannot_lower_are_refused_in_one_line(model, d, why):
    torch.manual_seed(5)
    m = model().eval()
    x = torch.randn(16, 8, d)
    with pytest.raises(ExportError, match=why) as exc:
        export_model(m, x, 4)
    assert "\n" not in str(exc.value) and "duplicates the k / v projection's rows" in str(exc.value)
    assert any("grouped-query attention" in p for p in unsupported(m, x, 4))


def test_models_without_expansion_are_untouched():
    """No expansion in the graph: expand_kv_heads changes nothing (the same nodes, the same code)."""
    model = TinyGPT(**LLAMA).eval()
    gm = trace(model, _calib()[:UNIT])
    before = gm.code
    assert expand_kv_heads(gm) == [] and gm.code == before


def test_smoothing_reads_the_models_own_projections():
    """smooth=alpha scales the norm's readers (q, k, v) on a copy before the rewrite duplicates k
    and v: it exports, and the poster's model is left as it was."""
    model = _gqa(2)
    k0 = model.blocks[0].attn.k.weight.detach().clone()
    prog, _ = export_model(model, _calib(), UNIT, smooth=0.5)
    assert len([o for o in prog.ops if o.desc.opcode == Opcode.ROPE]) == 4
    assert torch.equal(model.blocks[0].attn.k.weight, k0) and model.blocks[0].attn.k.out_features == 32
    export_model(model, _calib(), UNIT)
    assert {n for n, _ in model.named_modules() if "heads" in n or "rows" in n} == set()  # the rewrite's own modules
