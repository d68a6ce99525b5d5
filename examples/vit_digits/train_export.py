"""Train the digits vision transformer (sklearn's bundled 8x8 digits, offline, fixed seeds, about two
minutes on one core), export it to an int8 program and report float vs int8 accuracy on the
held-out split (the same split as examples/digits).

    python examples/vit_digits/train_export.py [--out examples/vit_digits] [--unit-batch 32]

Writes <out>/vit/program.json + weights.safetensors (the program folder), <out>/vit/
state_dict.safetensors (float weights, for `gpumesh program build`) and <out>/test_inputs.safetensors
(int8 units of the held-out split; labels: examples/digits/data/test_labels.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))

EPOCHS = 40


def build(out: Path, unit_batch: int = 32, epochs: int = EPOCHS) -> dict:
    import torch
    from safetensors.torch import save_file

    from examples.digits.train_export import load_split, train
    from examples.vit_digits.models import vit
    from gpumesh.node.runtime.evaluate import int8_predictions, quantize_units
    from gpumesh.node.runtime.export import export_model
    from gpumesh.node.runtime.files import load_program, save_program, save_units

    t0 = time.perf_counter()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and the float sums keep one order
    xtr, ytr, xte, yte = load_split()
    torch.manual_seed(0)
    model = train(vit(), xtr, ytr, epochs)
    with torch.no_grad():
        float_acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    trained = time.perf_counter() - t0
    prog, arrays = export_model(model, torch.from_numpy(xtr[:256]), unit_batch,
                                meta={"model": "examples/vit_digits/models.py:vit", "float_accuracy": float_acc})
    folder = out / "vit"
    save_program(folder, prog, arrays)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "state_dict.safetensors"))
    bundle = load_program(folder)
    int8_acc = float((int8_predictions(bundle, xte) == yte).mean())
    save_units(out / "test_inputs.safetensors", quantize_units(bundle.program, xte))
    return {"float_accuracy": float_acc, "int8_accuracy": int8_acc, "ops": len(prog.ops),
            "weights": len(prog.weights), "program_root": "0x" + prog.root().hex(),
            "train_seconds": round(trained, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--unit-batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    a = ap.parse_args()
    r = build(Path(a.out), a.unit_batch, a.epochs)
    print(f"vit: float {100 * r['float_accuracy']:.2f}%  int8 {100 * r['int8_accuracy']:.2f}%  ops {r['ops']}  "
          f"weights {r['weights']}  root {r['program_root']}  (trained in {r['train_seconds']} s, "
          f"{r['seconds']} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
