"""CPU throughput of the exact int8 executor vs torch float32 eager on the same float model, same
run; and the honest-path commitment overhead (hashing the unit outputs into the result root) as a
percentage of execution.

The job's unit is one batch: the program is exported at that batch. The executor runs its units in
passes of `rows/pass` rows (several stacked units, or part of one: docs/protocol.md 2.5), so
float32 eager is measured twice: one unit per call (what the job's unit is) and S = max(1,
rows/pass / batch) units per call ("same rows": as many rows per call as the executor when it
stacks). The
int8 figure is Executor.run (execution AND commitments); "execution only" is Executor.run_units.
Commitment = hashing time / execution time within the same Executor.run call (the best of the reps);
"keccak floor" = one streaming keccak256 over all the output bytes (no leaves, padding or tree) / the
same execution time: what no keccak commitment to these outputs can go below on this CPU.

Each (model, batch) cell is measured `--repeat` times (each time: best of a few reps of U units,
the four measurements interleaved); the line quotes the best and the median. The load average is
printed before and after (the build machine is shared).

    .venv/bin/python bench/bench_runtime.py [--batches 64,256,1024] [--repeat 3] [--quick]
    .venv/bin/python bench/bench_runtime.py --softmax   (integer softmax and layernorm vs torch float32)
    .venv/bin/python bench/bench_runtime.py --positions (integer rope and topk vs torch float32)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.digits import models  # noqa: E402
from gpumesh.client.core import merkle  # noqa: E402
from gpumesh.node.runtime.executor import Executor  # noqa: E402
from gpumesh.node.runtime.export import export_model  # noqa: E402
from gpumesh.node.runtime.files import ProgramBundle, canonical_bytes  # noqa: E402


class WideMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                                 nn.Linear(2048, 10))

    def forward(self, x):
        return self.net(x)


class MidCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.c3, self.b3 = nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.gap, self.flat, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.pool(self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x)))))))
        return self.fc(self.flat(self.gap(self.r3(x + self.b3(self.c3(x))))))


def _bundle(model, calib, unit_batch):
    prog, arrays = export_model(model, calib, unit_batch)
    return ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(name: str, model: nn.Module, bundle: ProgramBundle, units_n: int, reps: int, repeat: int) -> None:
    shape = bundle.program.input.type.shape
    scale = bundle.program.meta["input_scale"]
    ex = Executor(bundle)
    units_n = -(-units_n // ex.stack) * ex.stack  # whole stacked passes
    xf = torch.randn(units_n, *shape)
    units = np.clip(np.rint(xf.numpy() / scale), -128, 127).astype(np.int8)
    stacked = xf.reshape(-1, ex.stack * shape[0], *shape[1:])  # the executor's rows per pass
    model.eval()

    def float_units():
        with torch.inference_mode():
            for u in xf:
                model(u)

    def float_stacked():
        with torch.inference_mode():
            for u in stacked:
                model(u)

    float_units(), float_stacked(), ex.run(units)
    rows = []
    for _ in range(repeat):
        # each measurement is the best of `reps`, and the four are interleaved, so all see the same load
        t_fu, t_fs = _best(float_units, reps), _best(float_stacked, reps)
        t_x = _best(lambda: ex.run_units(units), reps)
        runs = [ex.run(units) for _ in range(reps)]
        best_run = min(runs, key=lambda r: r.exec_seconds + r.hash_seconds)
        t_r = best_run.exec_seconds + best_run.hash_seconds
        rows.append((t_fu / t_r, t_fs / t_r, t_fs / t_x, 100 * best_run.hash_seconds / best_run.exec_seconds, t_fu, t_r))
    # the floor of ANY keccak commitment to these outputs: one streaming keccak256 over all their
    # bytes (no leaves, no padding, no tree, one foreign call), as % of the execution time
    blob = best_run.outputs.tobytes()
    t_floor = _best(lambda: merkle.keccak256(blob), reps)
    floor_pct = 100 * t_floor / (best_run.exec_seconds or float("inf"))
    best = max(rows, key=lambda r: r[0])
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    n = units_n * shape[0]
    print(f"{name:<27} batch {shape[0]:>4} rows/pass {ex.rows:>5}: float32 eager {n / best[4]:>9.0f}/s  int8 exact {n / best[5]:>9.0f}/s"
          f"  ratio vs float@unit {best[0]:5.2f}x (median {med[0]:5.2f})  @same rows {max(r[1] for r in rows):5.2f}x"
          f" (median {med[1]:5.2f}; execution only {max(r[2] for r in rows):5.2f}x)"
          f"  commitment {min(r[3] for r in rows):6.2f}% (median {med[3]:6.2f}%; keccak floor {floor_pct:5.2f}%"
          f" for {len(blob) / units_n:.0f} output bytes per unit)", flush=True)


def bench_softmax(repeat: int, causal: int = 0) -> None:
    """The integer softmax kernel (docs/protocol.md 2.2.1) on 12 heads x [256, 256] rows against
    torch.softmax in float32 on the same logits (dequantized once, outside the timing), same run."""
    from gpumesh.client.core.ops.types import DType, Opcode, TensorType
    from gpumesh.node.runtime import kernels
    from gpumesh.node.runtime.randprog import _case, exp_table

    shape = (12, 256, 256)
    x = np.random.default_rng(0).integers(-128, 128, size=shape).astype(np.int8)
    case = _case(Opcode.SOFTMAX, [TensorType(DType.INT8, shape), TensorType(DType.INT32, (256,))],
                 [x, exp_table(1 / 16)], causal=causal, off=0)
    xs = [torch.from_numpy(a) for a in case.inputs]
    xf = xs[0].to(torch.float32) / 16
    if causal:
        xf = xf.masked_fill(torch.ones(256, 256, dtype=torch.bool).triu(1), float("-inf"))
    ti, tf = [], []
    for _ in range(repeat):
        ti.append(_best(lambda: kernels.run_op(case.desc, xs), 5))
        tf.append(_best(lambda: torch.softmax(xf, dim=-1), 5))
    bi, bf = min(ti), min(tf)
    print(f"softmax 12x[256,256]{' causal' if causal else ''}: int8 executor {bi * 1e3:.2f} ms, "
          f"torch float32 {bf * 1e3:.2f} ms (best of {repeat}x5); speed int8 / float32 = {bf / bi:.3f}x")


def bench_layernorm(repeat: int) -> None:
    """The integer layernorm kernel (docs/protocol.md 2.2.2) on [256, 768] (seq 256, d 768) against
    torch's float32 layer_norm (with weight and bias) on the same values, same run."""
    from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
    from gpumesh.node.runtime import kernels
    from gpumesh.node.runtime.randprog import _case

    n, dd = 256, 768
    rng = np.random.default_rng(0)
    arrs = [rng.integers(-128, 128, (n, dd)).astype(np.int8), rng.integers(-128, 128, dd).astype(np.int8),
            rng.integers(-(2**20), 2**20, dd).astype(np.int32)]
    case = _case(Opcode.LAYERNORM, [TensorType(DType.INT8, (n, dd)), TensorType(DType.INT8, (dd,)),
                                    TensorType(DType.INT32, (dd,))], arrs, x_zp=0, rms=0, eps=1,
                 requant=Requant(ReqMode.PER_TENSOR, 1 << 20, 30, 0, -128, 127))
    xs = [torch.from_numpy(a) for a in case.inputs]
    xf, wf, bf_ = (torch.from_numpy(a).to(torch.float32) for a in arrs)
    ti, tf = [], []
    for _ in range(repeat):
        ti.append(_best(lambda: kernels.run_op(case.desc, xs), 5))
        tf.append(_best(lambda: torch.nn.functional.layer_norm(xf, (dd,), wf, bf_), 5))
    bi, bf = min(ti), min(tf)
    print(f"layernorm [256,768]: int8 executor {bi * 1e3:.2f} ms, torch float32 {bf * 1e3:.2f} ms "
          f"(best of {repeat}x5); speed int8 / float32 = {bf / bi:.3f}x")


def bench_positions(repeat: int) -> None:
    """rope (docs/protocol.md 2.2.3) on 12 heads x [256, 64] (seq 256, head size 64), its table
    prepared once as the executor does, against float32 rotate-half (x*cos + rotate_half(x)*sin with
    cos/sin prepared); topk (2.2.4) k = 50 over [8, 50,257] int8 logits as lower_topk writes it
    (chunks of 8,192, a reshape, a top-k of the 350 pairs) against one torch.topk in float32."""
    from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
    from gpumesh.client.core.program import from_json
    from gpumesh.node.runtime import kernels
    from gpumesh.node.runtime.lower_topk import topk_ops
    from gpumesh.node.runtime.randprog import _case, rope_table

    h, t, dd = 12, 256, 64
    x = np.random.default_rng(0).integers(-128, 128, size=(h, t, dd)).astype(np.int8)
    tab = rope_table(t, dd)
    case = _case(Opcode.ROPE, [TensorType(DType.INT8, x.shape), TensorType(DType.INT32, tab.shape)], [x, tab],
                 x_zp=0, off=0, requant=Requant(ReqMode.PER_TENSOR, 1, 15, 0, -128, 127))
    fn = kernels.prepare_op(case.desc, [tab], torch.device("cpu"))
    xt = torch.from_numpy(x)
    xf = xt.to(torch.float32)
    cos = torch.from_numpy(np.concatenate([tab[..., 0], tab[..., 0]], -1) / 32768).to(torch.float32)
    sin = torch.from_numpy(np.concatenate([tab[..., 1], tab[..., 1]], -1) / 32768).to(torch.float32)

    def rope_f32():
        return xf * cos + torch.cat([-xf[..., dd // 2 :], xf[..., : dd // 2]], dim=-1) * sin

    logits = np.random.default_rng(1).integers(-128, 128, size=(8, 50257)).astype(np.int8)
    ops = [op.desc for op in from_json({
        "format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": [8, 50257]},
        "weights": [], "ops": topk_ops("y", "x", TensorType(DType.INT8, logits.shape), 50)}).ops]
    lt, lf = torch.from_numpy(logits), torch.from_numpy(logits).to(torch.float32)

    def topk_int8():
        y = lt
        for d in ops:
            y = kernels.run_op(d, [y])
        return y

    rows = [("rope 12x[256,64]", lambda: fn([xt]), rope_f32),
            ("topk k=50 [8,50257] (lowered)", topk_int8, lambda: torch.topk(lf, 50, dim=-1))]
    for name, fi, ff in rows:
        ti, tf = [], []
        for _ in range(repeat):
            ti.append(_best(fi, 5))
            tf.append(_best(ff, 5))
        bi, bf = min(ti), min(tf)
        print(f"{name}: int8 executor {bi * 1e3:.2f} ms, torch float32 {bf * 1e3:.2f} ms "
              f"(best of {repeat}x5); speed int8 / float32 = {bf / bi:.3f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="64,256,1024")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="digits models only")
    ap.add_argument("--softmax", action="store_true", help="only the softmax and layernorm kernels vs torch float32")
    ap.add_argument("--positions", action="store_true", help="only the rope and topk kernels vs torch float32")
    args = ap.parse_args()
    if args.positions:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; load average {os.getloadavg()}")
        bench_positions(args.repeat)
        return 0
    if args.softmax:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; load average {os.getloadavg()}")
        bench_softmax(args.repeat)
        bench_softmax(args.repeat, causal=1)
        bench_layernorm(args.repeat)
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; load average {os.getloadavg()}")
    from safetensors.torch import load_file

    ex = REPO / "examples" / "digits"
    calib = load_file(str(ex / "data" / "calib.safetensors"))["x"]
    for name in ("mlp", "cnn"):
        m = getattr(models, name)()
        m.load_state_dict(load_file(str(ex / name / "state_dict.safetensors")))
        for b in batches:
            bench(f"digits {name}", m, _bundle(m, calib, b), units_n=max(4, 8192 // b), reps=5, repeat=args.repeat)
    if not args.quick:
        wide = WideMLP()
        wcal = torch.randn(256, 1024)
        for b in batches:
            bench("wide MLP 1024-2048-2048-10", wide, _bundle(wide, wcal, b), units_n=max(2, 1024 // b), reps=3,
                  repeat=args.repeat)
        cnn = MidCNN().eval()
        ccal = torch.randn(64, 3, 32, 32)
        for b in [b for b in batches if b <= 256]:  # batch 1024 of 3x32x32 takes seconds per unit
            bench("CNN 3x32x32 32-64-64 resid", cnn, _bundle(cnn, ccal, b), units_n=2, reps=2, repeat=args.repeat)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
