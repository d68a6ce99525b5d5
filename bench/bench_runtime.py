"""CPU throughput of the exact int8 executor vs torch float32 eager on the same float model, same
batch, same run; and the honest-path commitment overhead (hashing the unit outputs into the result
root) as a percentage of execution.

    .venv/bin/python bench/bench_runtime.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.digits import models  # noqa: E402
from gpumesh.node.runtime.executor import Executor  # noqa: E402
from gpumesh.node.runtime.export import export_model  # noqa: E402
from gpumesh.node.runtime.files import ProgramBundle, canonical_bytes, load_program  # noqa: E402


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


def _bundle(model, sample, unit_batch):
    prog, arrays = export_model(model, sample, unit_batch)
    return ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)


def _best(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def bench(name: str, model: nn.Module, bundle: ProgramBundle, units_n: int, reps: int) -> tuple[float, float]:
    shape = bundle.program.input.type.shape
    scale = bundle.program.meta["input_scale"]
    xf = torch.randn(units_n, *shape)
    units = np.clip(np.rint(xf.numpy() / scale), -128, 127).astype(np.int8)
    ex = Executor(bundle)
    model.eval()

    def run_float():
        with torch.inference_mode():
            for u in xf:
                model(u)

    t_f = _best(run_float, reps)
    t_q = _best(lambda: ex.run(units), reps)
    res = ex.run(units)
    overhead = 100 * res.hash_seconds / res.exec_seconds
    samples = units_n * shape[0]
    print(f"{name:<34} batch {shape[0]:>4}: float32 eager {samples / t_f:>9.0f}/s  int8 exact {samples / t_q:>9.0f}/s"
          f"  ratio {t_f / t_q:5.2f}x  commitment {overhead:5.2f}% of execution")
    return t_f / t_q, overhead


def main() -> int:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    ex = REPO / "examples" / "digits"
    for name in ("mlp", "cnn"):
        from safetensors.torch import load_file

        m = getattr(models, name)()
        m.load_state_dict(load_file(str(ex / name / "state_dict.safetensors")))
        bench(f"digits {name}", m, load_program(ex / name), units_n=8, reps=5)
    wide = WideMLP()
    bench("wide MLP 1024-2048-2048-10", wide, _bundle(wide, torch.randn(256, 1024), 256), units_n=4, reps=3)
    cnn = MidCNN().eval()
    bench("CNN 3x32x32 (32-64-64 ch, residual)", cnn, _bundle(cnn, torch.randn(64, 3, 32, 32), 64), units_n=2, reps=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
