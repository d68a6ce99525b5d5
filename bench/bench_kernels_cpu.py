"""The fused CPU kernels (gpumesh.node.runtime.kernels_cpu, docs/protocol.md 2.4) against the torch
forms they replace, op by op, in one process: every op of the byte GPT's programs (the prefill at
batch 8, context 256, and the generation program's decode steps) prepared twice, once with the fused
kernels and once with the torch forms (`kernels_cpu.force`), run on the same inputs (the op inputs of
one honest pass), their outputs compared byte for byte, and each timed (best of `--reps` calls,
the two forms alternating). Prints per opcode the time of each form and the ratio (torch form /
fused: above 1, the kernels are faster), split into prefill and decode ops, and exits 1 if any op's
bytes differ.

    .venv/bin/python bench/bench_kernels_cpu.py [--threads 1,2] [--reps 5] [--cache /tmp/gpumesh-textgen]

The programs are bench_textgen's (exported once into --cache, the same folder and keys).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import _best  # noqa: E402 - the same best-of-n timer as the other benches
from bench_textgen import BATCH, PREFILL, _ids, bytegpt, program  # noqa: E402

from gpumesh.node.runtime import kernels_cpu  # noqa: E402
from gpumesh.node.runtime.evaluate import quantize_units  # noqa: E402
from gpumesh.node.runtime.executor import _UNIT, Executor  # noqa: E402


def op_inputs(ex: Executor, unit: np.ndarray) -> list[tuple[int, list[torch.Tensor]]]:
    """(op index, its input tensors) of every op of one honest pass through the per-op plan."""
    res = []
    with torch.inference_mode():
        x = ex._to_device(unit)
        outs: list = [None] * len(ex._plan)
        for j, (fn, srcs) in enumerate(ex._plan):
            xs = [x if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs]
            outs[j] = fn(xs)
            res.append((j, xs))
    return res


def compare(name: str, bundle, unit: np.ndarray, reps: int) -> int:
    kernels_cpu.force(False)
    plain = Executor(bundle)
    kernels_cpu.force(True)
    fused = Executor(bundle)
    kernels_cpu.force(None)
    rows: dict[str, list[float]] = {}
    bad = 0
    with torch.inference_mode():
        for j, xs in op_inputs(plain, unit):
            f_plain, f_fused = plain._plan[j][0], fused._plan[j][0]
            if not torch.equal(f_plain(xs), f_fused(xs)):
                bad += 1
                print(f"  op {j} ({bundle.program.ops[j].name}): the forms' bytes DIFFER", flush=True)
            op = bundle.program.ops[j]
            key = f"{'decode' if '@' in op.name or op.name.startswith('tokens') else 'prefill'} " \
                  f"{op.desc.opcode.name.lower()}"
            tp, tf = float("inf"), float("inf")
            for _ in range(reps):  # alternating, the best of each
                tp = min(tp, _best(lambda f=f_plain, xs=xs: f(xs), 1))
                tf = min(tf, _best(lambda f=f_fused, xs=xs: f(xs), 1))
            r = rows.setdefault(key, [0.0, 0.0, 0])
            r[0] += tp
            r[1] += tf
            r[2] += 1
    tot_p, tot_f = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    print(f"  {name}: {len(bundle.program.ops)} ops, bytes of the two forms {'IDENTICAL' if not bad else 'DIFFERENT'} "
          f"({bad} ops differ); all ops: torch forms {tot_p * 1e3:.2f} ms, fused {tot_f * 1e3:.2f} ms, "
          f"{tot_p / tot_f:.2f}x", flush=True)
    for key, (tp, tf, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        if tp < 0.02 * tot_p:
            continue
        print(f"    {key:22s} {n:4d} ops  torch forms {tp * 1e3:8.2f} ms  fused {tf * 1e3:8.2f} ms  {tp / tf:5.2f}x",
              flush=True)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cache", default="/tmp/gpumesh-textgen")
    args = ap.parse_args()
    if not kernels_cpu.enabled():
        print(f"fused CPU kernels unavailable ({kernels_cpu.BROKEN or 'numba missing or GPUMESH_CPU_KERNELS=torch'})")
        return 2
    print(f"torch {torch.__version__}, numba {kernels_cpu.numba.__version__}; load average {os.getloadavg()}",
          flush=True)
    model = bytegpt()
    calib, prompts = _ids("calib"), _ids("heldout")
    n = 8
    pre = program(model, "bytegpt", PREFILL, 1, Path(args.cache), calib)
    gen = program(model, "bytegpt", PREFILL - n + 1, n, Path(args.cache), calib)
    bad = 0
    for th in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(th)
        print(f"{th} thread(s):", flush=True)
        for name, bundle, p in (("byte GPT prefill b8 ctx 256", pre, PREFILL),
                                (f"byte GPT generation P {PREFILL - n + 1} N {n}", gen, PREFILL - n + 1)):
            unit = quantize_units(bundle.program, prompts[:BATCH, :p].numpy())[0]
            bad += compare(name, bundle, unit, args.reps)
    import numba

    print(f"numba threading layer: {numba.threading_layer() if args.threads != '1' else 'not started (1 thread)'}; "
          f"load average after {os.getloadavg()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
