"""Text-generation programs (node/runtime/export_generate.py): a tiny seeded GPT exported with a
prompt window P and N generated tokens is one int8 program (prefill + N - 1 decode steps, the KV
cache a concat in the trace). Its tokens equal greedy generation by the plain full-window program
run again on the growing window (bit for bit: same scales, same attributes, the same rows read),
they are compared with the float model's greedy generation (figures printed), and an element of a
softmax and of a KV-cache concat inside the LAST decode step is proven from committed bytes
(trace.element_proof), a lie about it refuted by the one-step's recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops import Opcode, compute_element
from gpumesh.client.core.program import Program
from gpumesh.node.runtime.evaluate import quantize_units
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.export import export_model
from gpumesh.node.runtime.export_generate import ExportError, export_generation, generation_meta
from gpumesh.node.runtime.files import load_program, save_program
from gpumesh.node.runtime.trace import element_proof, opened_bytes
from tests.unit.runtime.test_export_transformer import TRAIN, trained  # noqa: F401 (the module's fixture)
from tests.unit.runtime.tiny_gpt import TinyGPT, stdlib_bytes, windows

P, N, UNIT = 16, 6, 4
W = P + N - 1


def _calib() -> torch.Tensor:
    return windows(stdlib_bytes(TRAIN[:2]), W, 32, seed=1)


def _prompts(count: int = 8) -> torch.Tensor:
    return windows(stdlib_bytes(["fnmatch.py", "glob.py"]), P, count, seed=2)  # held-out text


def _bundle(tmp_path, name: str, prog: Program, arrays):
    save_program(tmp_path / name, prog, arrays)
    return load_program(tmp_path / name)  # validated again from the files, weight values included


def _repeated_full(bundle, prompts: torch.Tensor, n: int) -> np.ndarray:
    """Greedy generation with the plain full-window program: run it on prompt + tokens so far
    (the tail padded: causal, so never read), take the argmax at the last real position."""
    win = torch.cat([prompts, torch.zeros(len(prompts), n - 1, dtype=prompts.dtype)], 1)
    out = []
    for k in range(n):
        got = Executor(bundle).run(quantize_units(bundle.program, win.numpy())).outputs
        tok = got.reshape(-1, win.shape[1])[: len(win), P + k - 1]
        out.append(tok)
        if k < n - 1:
            win[:, P + k] = torch.from_numpy(tok.astype(np.int64))
    return np.stack(out, 1)


def _float_greedy(model, prompts: torch.Tensor, n: int) -> np.ndarray:
    x = prompts.clone()
    with torch.no_grad():
        for _ in range(n):
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], 1)
    return x[:, P:].numpy()


def _generate(bundle, prompts: torch.Tensor) -> np.ndarray:
    return Executor(bundle).run(quantize_units(bundle.program, prompts.numpy())).outputs.reshape(-1, N)[: len(prompts)]


@pytest.fixture(scope="module")
def generation(trained, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("gen")
    prog, arrays = export_generation(trained, _calib(), UNIT, N)
    full, farrays = export_model(trained, _calib(), UNIT)
    return _bundle(tmp, "gen", prog, arrays), _bundle(tmp, "full", full, farrays)


def test_generated_tokens_equal_repeated_full_window_program(generation, trained):  # noqa: F811
    gen, full = generation
    prog = gen.program
    assert prog.input.type.shape == (UNIT, P) and prog.output_type.shape == (UNIT, N)
    assert generation_meta(prog.meta) == {"prompt_len": P, "generate": N, "pad_byte": 0x0A}
    ops = [o.desc.opcode for o in prog.ops]
    assert ops.count(Opcode.SOFTMAX) == 2 * N and ops.count(Opcode.ARGMAX) == N
    assert ops.count(Opcode.CONCAT) == 2 * 2 * (N - 1) + (N - 1)  # K and V per layer per step, the tokens
    assert ops.count(Opcode.SLICE) == 1  # the prefill's last position into the LM head
    offs = sorted({o.desc.attr("off") for o in prog.ops if o.desc.opcode == Opcode.SOFTMAX})
    assert offs == [0, *range(P, P + N - 1)]
    prompts = _prompts()
    got = _generate(gen, prompts)
    want = _repeated_full(full, prompts, N)
    assert np.array_equal(got, want)
    flt = _float_greedy(trained, prompts, N)
    same_prefix = np.cumprod(got == flt, axis=1).sum(1)
    print(f"\ngeneration ({len(prog.ops)} ops, P {P}, N {N}): int8 = repeated full-window program on all "
          f"{got.size} tokens; int8 vs float greedy: {float((got == flt).mean()):.3f} of tokens, first token "
          f"{float((got[:, 0] == flt[:, 0]).mean()):.3f}, mean common prefix {same_prefix.mean():.2f} of {N}")
    assert (got[:, 0] == flt[:, 0]).mean() >= 0.75


def test_a_later_decode_steps_softmax_and_cache_elements_are_proven(generation):
    gen, _ = generation
    prog = gen.program
    unit = quantize_units(prog, _prompts(UNIT).numpy())[0]
    tr = Executor(gen).trace(unit)
    ran = Executor(gen).run(unit[None]).outputs  # the fast run (passes over rows) = the trace
    assert np.frombuffer(tr.outputs[-1], dtype=np.int32).tobytes() == ran.astype(np.int32).tobytes()
    last = N - 1
    names = {o.name: j for j, o in enumerate(prog.ops)}
    for name in (f"softmax_1@{last}", f"transpose_6.kv@{last}"):
        j = names[name]
        d = prog.ops[j].desc
        vals = np.frombuffer(tr.outputs[j], dtype=np.int8)
        # the last key of a query row (the new position itself), and an element of a cached row
        for e in (d.out.count - 1, d.out.count // 2 - 3):
            p = element_proof(gen, tr, j, e)
            assert p.value == int(vals[e])
            assert compute_element(d, e, opened_bytes(p)) == p.value
            assert compute_element(d, e, opened_bytes(p)) != (p.value + 1 if p.value < 127 else 126)  # a lie loses
    sm = prog.ops[names[f"softmax_1@{last}"]].desc
    assert sm.attr("off") == P + last - 1 and sm.out.shape == (UNIT, 4, 1, P + last)


@pytest.mark.parametrize("style", [dict(attn="sdpa", rms=True, swiglu=True), dict(attn="mha")])
def test_other_attention_styles_generate_like_the_full_program(tmp_path, style):
    """F.scaled_dot_product_attention with RMSNorm and SwiGLU; nn.MultiheadAttention (V stored
    transposed, its cache grows along the last axis). Seeded random weights."""
    torch.manual_seed(3)
    model = TinyGPT(**style).eval()
    prompts = _prompts(UNIT)
    gen = _bundle(tmp_path, "gen", *export_generation(model, _calib(), UNIT, N))
    full = _bundle(tmp_path, "full", *export_model(model, _calib(), UNIT))
    assert np.array_equal(_generate(gen, prompts), _repeated_full(full, prompts, N))


def test_prompt_length_and_refusals():
    torch.manual_seed(3)
    model = TinyGPT().eval()
    prog, _ = export_generation(model, _calib(), 2, 3, prompt_len=8)
    assert prog.input.type.shape == (2, 8) and prog.output_type.shape == (2, 3)
    one, _ = export_generation(model, _calib(), 2, 1)  # the prefill alone: its last position's argmax
    assert one.input.type.shape == (2, W) and one.output_type.shape == (2, 1)
    assert one.ops[-1].desc.opcode == Opcode.ARGMAX and not any(o.desc.opcode == Opcode.CONCAT for o in one.ops)
    with pytest.raises(ExportError, match="calibration windows of 22 tokens"):
        export_generation(model, _calib(), 2, 7, prompt_len=16)
    with pytest.raises(ExportError, match="--generate 22 leaves no prompt: .* at most 21 generated tokens"):
        export_generation(model, _calib(), 2, 22)
    with pytest.raises(ExportError, match="integer token windows"):
        export_generation(model, _calib().float(), 2, 3)


class _Pooled(torch.nn.Module):
    """Embeddings averaged over the positions: no position axis to generate along."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.head = torch.nn.Embedding(256, 16), torch.nn.Linear(16, 256)

    def forward(self, idx):
        return self.head(self.tok(idx).mean(1))


def test_an_op_across_the_positions_is_refused_in_one_line():
    torch.manual_seed(3)
    with pytest.raises(ExportError, match=r"^\S+ \(\w+\): .*a generation program cannot follow its positions$"):
        export_generation(_Pooled().eval(), _calib(), 2, 3)


def test_more_tokens_than_the_op_limit_allows_is_refused_with_the_most_it_can():
    torch.manual_seed(3)
    model = TinyGPT(layers=8, ctx=64).eval()
    calib = windows(stdlib_bytes(TRAIN[:1]), 47, 4, seed=1)
    with pytest.raises(ExportError, match=r"--generate 40: the program would have \d+ ops, above the 4096 .*"
                                          r"at most (\d+) tokens per program") as exc:
        export_generation(model, calib, 1, 40, prompt_len=8)
    most = int(str(exc.value).rsplit("at most ", 1)[1].split()[0])
    assert len(export_generation(model, calib, 1, most, prompt_len=8)[0].ops) <= 4096
    with pytest.raises(ExportError, match="above the 4096"):
        export_generation(model, calib, 1, most + 1, prompt_len=8)
