"""Train the digits MLP and CNN (sklearn's bundled 8x8 digits, offline, seconds), export both to
int8 programs and report float vs int8 accuracy on the held-out split.

    python examples/digits/train_export.py [--out examples/digits] [--unit-batch 32]

Writes <out>/<model>/program.json + weights.safetensors (the program folder), <out>/<model>/
state_dict.safetensors (float weights, for `gpumesh program build`), and <out>/data/ with
calib.safetensors (float), test_inputs.safetensors (int8 units per model) and test_labels.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))


def load_split(seed: int = 0):
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]  # [S, 1, 8, 8]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.7 * len(x))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def train(model, x, y, epochs: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model.eval()


def build_examples(out: Path, unit_batch: int = 32, epochs: int = 40, names=("mlp", "cnn")) -> dict:
    import torch
    from safetensors.torch import save_file

    from examples.digits import models
    from gpumesh.node.runtime.evaluate import int8_predictions, quantize_units
    from gpumesh.node.runtime.export import export_model
    from gpumesh.node.runtime.files import load_program, save_program, save_units

    torch.set_num_threads(max(1, torch.get_num_threads()))
    xtr, ytr, xte, yte = load_split()
    (out / "data").mkdir(parents=True, exist_ok=True)
    save_file({"x": torch.from_numpy(xtr[:256]).contiguous()}, str(out / "data" / "calib.safetensors"))
    save_file({"x": torch.from_numpy(xte).contiguous()}, str(out / "data" / "test_float.safetensors"))
    (out / "data" / "test_labels.json").write_text(json.dumps(yte.tolist()) + "\n")
    report = {}
    for name in names:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = train(getattr(models, name)(), xtr, ytr, epochs)
        with torch.no_grad():
            float_acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
        prog, arrays = export_model(model, torch.from_numpy(xtr[:256]), unit_batch,
                                    meta={"model": f"examples/digits/models.py:{name}", "float_accuracy": float_acc})
        folder = out / name
        save_program(folder, prog, arrays)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "state_dict.safetensors"))
        bundle = load_program(folder)
        int8_acc = float((int8_predictions(bundle, xte) == yte).mean())
        save_units(out / "data" / f"test_inputs_{name}.safetensors", quantize_units(bundle.program, xte))
        report[name] = {"float_accuracy": float_acc, "int8_accuracy": int8_acc, "ops": len(prog.ops),
                        "program_root": "0x" + prog.root().hex(), "seconds": round(time.perf_counter() - t0, 1)}
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--unit-batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40)
    a = ap.parse_args()
    rep = build_examples(Path(a.out), a.unit_batch, a.epochs)
    for name, r in rep.items():
        print(f"{name}: float {100 * r['float_accuracy']:.2f}%  int8 {100 * r['int8_accuracy']:.2f}%  "
              f"ops {r['ops']}  root {r['program_root']}  ({r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
