"""CPU speed of transformer jobs (issue #14, bars): the int8 executor against torch float32 eager on
the SAME float model computing the same thing, in one process, for two models:

- the byte GPT of examples/bytegpt (its committed float weights; its int8 programs built as
  `gpumesh program build --generate N` builds them: export_generate.export_generation with the
  example's calibration windows, unit batch 8);
- a GPT-2-small-shaped float model (d_model 768, 12 layers, 12 heads, MLP 3,072, context 1,024,
  vocabulary 50,257; seeded random weights, GPT-2's initialisation), written like the byte GPT
  (examples/bytegpt/model.ByteGPT at that shape: the same module layout) and exported through the same path. Its
  prompts are bytes (< 256: v1 unit inputs are int8), its embedding and LM head have 50,257 rows
  and its generated ids are int32 up to 50,256.

Measured per model, int8 = `Executor.run_units` on one unit, float = float32 eager:
(a) prefill: batch 8, prompts of 256 tokens, the greedy next token of each (int8: the program of
    `--generate 1 --prompt-len 256`; float: the model's blocks over the 256 positions, the final
    norm and LM head on the last position only, as the int8 program does); goal int8 >= 2x.
(b) generation with a KV cache: N tokens after batch-8 prompts of P = 257 - N tokens (the
    calibration windows are 256 long: the program's window P + N - 1 is 256); int8 = the generation
    program (prefill + N - 1 decode steps with concat KV caches); float = a hand-written KV-cache
    loop (preallocated [B, H, W, Dh] caches, the prefill, then one position per step); generated
    tokens/s of both (int8: the honest plan's loop as Executor._forward runs it), and decode-only
    tokens/s, the decode steps timed inside the same calls (int8: from the first op of step 1);
    goal int8 >= 1.5x.
(c) the honest worker's result commitments for the unit (node/worker/node.py `_run_units` and
    `_submit`: merkle.tensor_roots of the outputs, the result root, the outputs file's bytes and its
    CID) as % of the unit's execution; goal <= 3% for the GPT-2-small shape. `--gpt2-shape` adds the
    hand-built examples/gpt2_shape program (one unit = one sequence of 1,024 tokens).
Agreement: int8 vs float greedy tokens on the measured prompts (speed is not bought with wrong
answers).

Each figure of (a) is the best of `--reps` calls, measured `--repeat` times interleaved (int8,
float32, int8, ...), the best kept; (b) alternates single calls, `--repeat` x `--reps` of each. The
load average is printed before and after (the build machine is shared). `--threads 1,2` measures
at each torch thread count in turn; `--profile` adds per-op timers over the generation program's
honest plan (its shares per opcode, prefill and decode apart).

    .venv/bin/python bench/bench_textgen.py [--models bytegpt,gpt2] [--threads 1,2] [--generate 8]
        [--repeat 2] [--reps 2] [--cache /tmp/gpumesh-textgen] [--gpt2-shape] [--profile]
        [--bytegpt-weights FILE]

Programs are exported once and kept under `--cache` (keyed by model, a digest of its float weights,
P and N; export is deterministic, so a cached program is the one the export would write again).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_runtime import _best  # noqa: E402 - the same best-of-n timer (bench/ is this script's folder)

from gpumesh.client.core import merkle  # noqa: E402
from gpumesh.client.core.program import result_root  # noqa: E402
from gpumesh.ipfs.unixfs import cid_of_bytes  # noqa: E402
from gpumesh.node.jobs.outputs import outputs_bytes  # noqa: E402
from gpumesh.node.runtime import kernels  # noqa: E402
from gpumesh.node.runtime.evaluate import quantize_units  # noqa: E402
from gpumesh.node.runtime.executor import _UNIT, Executor  # noqa: E402
from gpumesh.node.runtime.files import load_program, read_tensors, save_program  # noqa: E402

BATCH, PREFILL = 8, 256
BYTEGPT = REPO / "examples" / "bytegpt"


def gpt2_small(seed: int = 0):
    """GPT-2 small's shape in the byte GPT's layout (examples/bytegpt/model.ByteGPT: d 768, 12
    layers, 12 heads, context 1,024, vocabulary 50,257) with GPT-2's initialisation (the byte GPT's
    train._init), seeded."""
    from examples.bytegpt.model import ByteGPT
    from examples.bytegpt.train import _init

    torch.manual_seed(seed)
    m = ByteGPT(layers=12, d=768, heads=12, ctx=1024, vocab=50257)
    _init(m)
    return m.eval()


def bytegpt(weights: Path = BYTEGPT / "state_dict.safetensors"):
    from examples.bytegpt.model import gpt

    m = gpt()
    m.load_state_dict({k: v.float() for k, v in read_tensors(weights, as_torch=True).items()})
    return m.eval()


def _ids(name: str) -> torch.Tensor:
    return read_tensors(BYTEGPT / f"{name}.safetensors", as_torch=True)["ids"].long()


def program(model: nn.Module, key: str, p: int, n: int, cache: Path, calib: torch.Tensor):
    """The generation program of `model` (P = p, N = n) as `program build --generate n --prompt-len
    p --unit-batch 8` writes it, exported once into `cache`."""
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    folder = cache / f"{key}-{digest[:12]}-p{p}-n{n}"  # other weights, another program
    if not (folder / "program.json").is_file():
        from gpumesh.node.runtime.export_generate import export_generation

        t0 = time.perf_counter()
        prog, arrays = export_generation(model, calib, BATCH, n, p)
        save_program(folder, prog, arrays)
        print(f"  exported {folder.name}: {len(prog.ops)} ops, {time.perf_counter() - t0:.1f} s", flush=True)
    return load_program(folder)


# ---------------------------------------------------------------------------------------------
# float32 eager


@torch.inference_mode()
def float_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The LM head's logits at the last position of each prompt: the blocks over every position,
    the final norm and the LM head on the last one only (what the int8 prefill program computes)."""
    h = model.tok(x) + model.pos(torch.arange(x.shape[1]))
    for blk in model.blocks:
        h = blk(h)
    return model.head(model.ln_f(h[:, -1]))


def float_next(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The greedy next token of each prompt."""
    return float_logits(model, x).argmax(-1)


@torch.inference_mode()
def float_generate(model: nn.Module, x: torch.Tensor, n: int, heads: int, marks: list | None = None) -> torch.Tensor:
    """n greedy tokens after prompts x [B, P] with a KV cache: caches [B, H, P + n - 1, Dh]
    preallocated per block, the prefill writes positions 0..P-1, each decode step one position.
    `marks` (a list) receives the perf_counter time at the end of the prefill."""
    b, p = x.shape
    w = p + n - 1
    blocks = list(model.blocks)
    d = model.tok.embedding_dim
    dh = d // heads
    kc = [torch.empty(b, heads, w, dh) for _ in blocks]
    vc = [torch.empty(b, heads, w, dh) for _ in blocks]
    scale = 1.0 / math.sqrt(dh)
    mask = torch.ones(p, p, dtype=torch.bool).triu(1)

    def step(ids: torch.Tensor, t0: int) -> torch.Tensor:
        t = ids.shape[1]
        h = model.tok(ids) + model.pos(torch.arange(t0, t0 + t))
        for i, blk in enumerate(blocks):
            a = blk.attn
            q, k, v = a.qkv(blk.ln1(h)).split(d, dim=2)
            q, k, v = (y.view(b, t, heads, dh).transpose(1, 2) for y in (q, k, v))
            kc[i][:, :, t0 : t0 + t] = k
            vc[i][:, :, t0 : t0 + t] = v
            att = (q @ kc[i][:, :, : t0 + t].transpose(-2, -1)) * scale
            if t > 1:
                att = att.masked_fill(mask[:t, :t], float("-inf"))
            y = F.softmax(att, dim=-1) @ vc[i][:, :, : t0 + t]
            h = h + a.proj(y.transpose(1, 2).reshape(b, t, d))
            h = h + blk.out(blk.act(blk.fc(blk.ln2(h))))
        return model.head(model.ln_f(h[:, -1])).argmax(-1, keepdim=True)

    toks = [step(x, 0)]
    if marks is not None:
        marks.append(time.perf_counter())
    for k in range(1, n):
        toks.append(step(toks[-1], p + k - 1))
    return torch.cat(toks, 1)


# ---------------------------------------------------------------------------------------------
# timing


def _compare(fi, ff, repeat: int, reps: int) -> tuple[float, float]:
    fi(), ff()  # warm-up: lazy state, allocator
    ti = tf = float("inf")
    for _ in range(repeat):
        ti = min(ti, _best(fi, reps))
        tf = min(tf, _best(ff, reps))
    return ti, tf


def timed(fn) -> tuple[float, float]:
    """(seconds of fn(marks), seconds after the mark fn appended: its decode steps)."""
    marks: list[float] = []
    t0 = time.perf_counter()
    fn(marks)
    t1 = time.perf_counter()
    return t1 - t0, t1 - marks[0]


def int8_generate(ex: Executor, unit: np.ndarray, marks: list) -> np.ndarray:
    """Executor.run_units on one unit with the honest plan's loop written out (as Executor._forward,
    keep=False), marking the time when the prefill's ops are done (the first op of decode step 1)."""
    first = next(j for j, op in enumerate(ex.program.ops) if "@" in op.name or op.name.startswith("tokens"))
    with torch.inference_mode():
        x = ex._to_device(unit)
        outs: list = [None] * len(ex._honest)
        for j, (fn, srcs) in enumerate(ex._honest):
            if j == first:
                marks.append(time.perf_counter())
            outs[j] = fn([x if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs])
            for i in ex._frees[j]:
                outs[i] = None
        return outs[-1].cpu().numpy()


def _compare_split(fi, ff, rounds: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best (total, decode) seconds of int8 `fi` and float `ff`, calls alternating, `rounds` each
    (each minimum taken on its own)."""
    fi(), ff()
    bi = bf = (float("inf"), float("inf"))
    for _ in range(rounds):
        ti, tf = fi(), ff()
        bi = (min(bi[0], ti[0]), min(bi[1], ti[1]))
        bf = (min(bf[0], tf[0]), min(bf[1], tf[1]))
    return bi, bf


def commitment(outs: np.ndarray, reps: int) -> float:
    """Seconds of an honest worker's result commitments for outputs [U, ...]: the unit roots
    (`_run_units`), then the result root and the outputs file with its CID (`_submit`)."""
    def commit():
        roots = merkle.tensor_roots(np.ascontiguousarray(outs))
        result_root(list(roots))
        cid_of_bytes(outputs_bytes(outs))
    return _best(commit, reps)


def profile(ex: Executor, unit: np.ndarray, top: int = 12) -> None:
    """Each op of the honest plan timed inside one pass, summed per opcode (and per step kind:
    prefill / decode), the shares printed."""
    by: dict[str, float] = {}
    calls: dict[str, int] = {}
    total = 0.0
    with torch.inference_mode():
        x = ex._to_device(unit)
        outs: list = [None] * len(ex._honest)
        for j, (fn, srcs) in enumerate(ex._honest):
            xs = [x if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs]
            t0 = time.perf_counter()
            outs[j] = fn(xs)
            dt = time.perf_counter() - t0
            for i in ex._frees[j]:
                outs[i] = None
            op = ex.program.ops[j]
            key = f"{'decode' if '@' in op.name or op.name.startswith('tokens') else 'prefill'} {op.desc.opcode.name.lower()}"
            by[key] = by.get(key, 0.0) + dt
            calls[key] = calls.get(key, 0) + 1
            total += dt
    parts = sorted(by.items(), key=lambda kv: -kv[1])[:top]
    print(f"    profile ({total * 1e3:.1f} ms over {len(ex._honest)} ops): " + ", ".join(
        f"{k} {v * 1e3:.1f} ms/{calls[k]} ({100 * v / total:.0f}%)" for k, v in parts), flush=True)


def bench_model(name: str, model: nn.Module, heads: int, calib: torch.Tensor, prompts: torch.Tensor, n: int,
                threads: list[int], args) -> None:
    cache = Path(args.cache)
    p_gen = PREFILL - n + 1
    pre = program(model, name, PREFILL, 1, cache, calib)
    gen = program(model, name, p_gen, n, cache, calib)
    x256 = prompts[:BATCH, :PREFILL]
    xg = prompts[:BATCH, :p_gen]
    u256 = quantize_units(pre.program, x256.numpy())
    ug = quantize_units(gen.program, xg.numpy())
    ex_pre, ex_gen = Executor(pre), Executor(gen)
    print(f"{name}: prefill program {len(pre.program.ops)} ops; generation program P {p_gen} N {n}: "
          f"{len(gen.program.ops)} ops", flush=True)
    # agreement (once)
    with torch.inference_mode():
        got1 = ex_pre.run_units(u256).reshape(-1)
        want1 = float_next(model, x256).numpy()
        gotn = ex_gen.run_units(ug).reshape(BATCH, n)
        wantn = float_generate(model, xg, n, heads).numpy()
        check = model(xg)[:, -1].argmax(-1).numpy()
    assert (check == wantn[:, 0]).all(), "the KV-cache loop's first token differs from the model's forward"
    top = float_logits(model, x256).topk(2, dim=-1).values
    spread = float_logits(model, x256).std(dim=-1)
    margin = ((top[:, 0] - top[:, 1]) / spread).median().item()
    print(f"  agreement int8 vs float: next token {int((got1 == want1).sum())}/{BATCH}; generated tokens "
          f"{int((gotn == wantn).sum())}/{gotn.size} (first {int((gotn[:, 0] == wantn[:, 0]).sum())}/{BATCH}, "
          f"identical generations {int((gotn == wantn).all(axis=1).sum())}/{BATCH}); float top-1 minus top-2 "
          f"logit, median over the prompts: {margin:.3f} standard deviations of the logits", flush=True)
    for th in threads:
        torch.set_num_threads(th)
        print(f"  {th} thread(s), load average {os.getloadavg()}", flush=True)
        ti, tf = _compare(lambda: ex_pre.run_units(u256), lambda: float_next(model, x256), args.repeat, args.reps)
        print(f"  (a) prefill b{BATCH} ctx {PREFILL}: int8 {ti * 1e3:9.1f} ms  float32 {tf * 1e3:9.1f} ms  "
              f"ratio {tf / ti:5.2f}x (goal >= 2x)", flush=True)
        (gi, di), (gf, df) = _compare_split(lambda: timed(lambda m: int8_generate(ex_gen, ug[0], m)),
                                            lambda: timed(lambda m: float_generate(model, xg, n, heads, m)),
                                            args.repeat * args.reps)
        toks, dtoks = BATCH * n, BATCH * (n - 1)
        print(f"  (b) generate {n} tokens x b{BATCH} after P {p_gen}: int8 {gi * 1e3:9.1f} ms ({toks / gi:7.1f} tok/s)  "
              f"float32 {gf * 1e3:9.1f} ms ({toks / gf:7.1f} tok/s)  ratio {gf / gi:5.2f}x (goal >= 1.5x)", flush=True)
        print(f"      decode steps only ({n - 1} steps, timed inside the same calls): int8 {di * 1e3:.1f} ms "
              f"({dtoks / di:7.1f} tok/s)  float32 {df * 1e3:.1f} ms ({dtoks / df:7.1f} tok/s)  ratio {df / di:5.2f}x",
              flush=True)
        outs = ex_gen.run_units(ug)
        tc = commitment(outs, max(3, args.reps))
        tc1 = commitment(ex_pre.run_units(u256), max(3, args.reps))
        print(f"  (c) commitments (unit roots, result root, outputs file + CID): generation {tc * 1e6:.0f} us = "
              f"{100 * tc / gi:.4f}% of its execution; prefill {tc1 * 1e6:.0f} us = {100 * tc1 / ti:.4f}% (goal <= 3%)",
              flush=True)
        if args.profile:
            profile(ex_gen, ug[0])


def bench_gpt2_shape(threads: list[int], args) -> None:
    """examples/gpt2_shape: one unit = one sequence of 1,024 tokens, output the next token."""
    from examples.gpt2_shape import build

    cfg = build.PRESETS["small"]
    bundle = build.bundle(cfg)
    prog, units = bundle.program, build.units(cfg)
    ex = Executor(bundle)
    for th in threads:
        torch.set_num_threads(th)
        ex.run(units)
        t = min(_best(lambda: ex.run(units), 1) for _ in range(args.repeat))
        res = ex.run(units)
        tc = commitment(res.outputs, 5)
        print(f"  gpt2_shape ({len(prog.ops)} ops, 1 unit of 1,024 tokens), {th} thread(s): execution "
              f"{res.exec_seconds:.2f} s (best run {t:.2f} s); commitments {tc * 1e6:.0f} us = "
              f"{100 * tc / res.exec_seconds:.5f}%", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bytegpt,gpt2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--generate", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/gpumesh-textgen")
    ap.add_argument("--gpt2-shape", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--bytegpt-weights", default=str(BYTEGPT / "state_dict.safetensors"),
                    help="the byte GPT's float weights (default: the example's)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    kernels.set_deterministic()
    kernels.tune_allocator()
    print(f"torch {torch.__version__}, CPU; load average {os.getloadavg()}", flush=True)
    calib, held = _ids("calib"), _ids("heldout")
    for name in args.models.split(","):
        torch.set_num_threads(max(threads))
        if name == "bytegpt":
            bench_model(name, bytegpt(Path(args.bytegpt_weights)), 4, calib, held, args.generate, threads, args)
        elif name == "gpt2":
            bench_model(name, gpt2_small(), 12, calib[:BATCH], held, args.generate, threads, args)
        else:
            raise SystemExit(f"--models: unknown model {name!r} (bytegpt, gpt2)")
    if args.gpt2_shape:
        bench_gpt2_shape(threads, args)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
