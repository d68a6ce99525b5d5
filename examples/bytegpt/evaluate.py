"""Float vs int8 figures of the byte GPT on held-out windows: greedy next-byte accuracy at every
position (as `gpumesh program build --eval` reports it: the argmax program) and bits-per-byte.

Bits-per-byte of the int8 model comes from the `--logits` program (export_model(argmax=False)):
its output is int8 logits q [B, T, 256] on one per-tensor scale s = act_scale(max |float logits|
over the calibration windows), the export's own activation scale for the LM head's output. The
int8 model's next-byte distribution is softmax(s * q); bits-per-byte is the mean over the
predicted positions (all but the last of each window) of -log2 p(next byte), the float model's
likewise from its float logits.

    python examples/bytegpt/evaluate.py [--dir examples/bytegpt] [--windows N]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))

UNIT = 8


def load(folder: Path):
    """(model with the committed weights in fp32, calib ids, held-out ids) as int64 tensors."""
    from examples.bytegpt.model import gpt
    from gpumesh.node.runtime.files import read_tensors

    model = gpt()
    sd = read_tensors(folder / "state_dict.safetensors", as_torch=True)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    ids = [read_tensors(folder / f, as_torch=True)["ids"].long() for f in ("calib.safetensors", "heldout.safetensors")]
    return model.eval(), ids[0], ids[1]


def _float_logits(model, ids):
    import torch

    with torch.no_grad():
        return torch.cat([model(ids[i : i + 16]) for i in range(0, len(ids), 16)])


def _bits(logits, ids) -> float:
    import torch.nn.functional as F

    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), ids[:, 1:].reshape(-1))
    return float(nll) / math.log(2)


def figures(model, calib, held) -> dict:
    """Float and int8 next-byte accuracy and bits-per-byte on `held` (int64 [S, T])."""
    import torch

    from gpumesh.node.runtime.export import export_model
    from gpumesh.node.runtime.quant import act_scale

    nxt = held[:, 1:]
    fl = _float_logits(model, held)
    prog, arrays = export_model(model, calib, UNIT)
    got = torch.from_numpy(_run(prog, arrays, held).reshape(held.shape).astype("int64"))
    want = fl.argmax(-1)
    lprog, larrays = export_model(model, calib, UNIT, argmax=False)
    q = torch.from_numpy(_run(lprog, larrays, held).reshape(*held.shape, -1).astype("float64"))
    scale = act_scale(float(_float_logits(model, calib).abs().max()))
    f_acc, q_acc = float((want[:, :-1] == nxt).double().mean()), float((got[:, :-1] == nxt).double().mean())
    f_bpb, q_bpb = _bits(fl, held), _bits(q * scale, held)
    return {"positions": int(nxt.numel()), "ops": len(prog.ops), "program_root": "0x" + prog.root().hex(),
            "next_byte_agreement": round(float((got == want).double().mean()), 4),
            "float_next_byte_accuracy": round(f_acc, 4), "int8_next_byte_accuracy": round(q_acc, 4),
            "float_bits_per_byte": round(f_bpb, 4), "int8_bits_per_byte": round(q_bpb, 4),
            "bits_per_byte_increase": round(q_bpb / f_bpb - 1, 4)}


def _run(prog, arrays, ids):
    """The program's outputs on ids (int64 [S, T]), S rounded up to whole units, first S kept."""
    import tempfile

    import numpy as np

    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, save_program

    with tempfile.TemporaryDirectory() as d:
        save_program(d, prog, arrays)
        bundle = load_program(d)  # validated from the files, as a worker loads it
    out = np.asarray(Executor(bundle).run(quantize_units(bundle.program, ids.numpy())).outputs)
    return out.reshape(-1, *out.shape[2:])[: len(ids)]  # [units, B, ...] -> [S, ...]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(HERE))
    ap.add_argument("--windows", type=int, default=None, help="the first N held-out windows only")
    a = ap.parse_args()
    model, calib, held = load(Path(a.dir))
    for k, v in figures(model, calib, held[: a.windows]).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
