"""Per-op CUDA timings of the int8 executor's honest plan (the gpu_check's random CNN, batch 128),
to see where a pass goes. Prints one line per plan entry: op, output shape, ms (synchronised).

    python3 bench/gpu_ops.py        # on a machine with a CUDA GPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (its keccak stand-in and BigCNN)
import torch  # noqa: E402

from gpumesh.node.runtime.executor import _UNIT, Executor  # noqa: E402
from gpumesh.node.runtime.export import export_model  # noqa: E402
from gpumesh.node.runtime.files import ProgramBundle, canonical_bytes  # noqa: E402


def main() -> int:
    torch.manual_seed(0)
    big = gpu_check.BigCNN().eval()
    prog, arrays = export_model(big, torch.randn(64, 3, 32, 32), unit_batch=128)
    bundle = ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)
    ex = Executor(bundle, "cuda")
    x = torch.randint(-128, 128, prog.input.type.shape, dtype=torch.int8, device="cuda")
    reps = 20
    times = [0.0] * len(ex._honest)
    with torch.inference_mode():
        for rep in range(reps + 2):
            outs: list = []
            for j, (fn, srcs) in enumerate(ex._honest):
                torch.cuda.synchronize()
                t = time.perf_counter()
                outs.append(fn([x if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs]))
                torch.cuda.synchronize()
                if rep >= 2:
                    times[j] += time.perf_counter() - t
    for op, t, o in zip(prog.ops, times, outs, strict=True):
        print(f"  {op.name:<10} {op.desc.opcode.name:<10} {str(tuple(o.shape)):<22} {1e3 * t / reps:7.3f} ms")
    print(f"  total {1e3 * sum(times) / reps:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
