"""The digits vision transformer (examples/vit_digits): its committed float weights export to the
committed program byte for byte (conv patches, Flatten(2) + transpose, a learned position
parameter, non-causal F.scaled_dot_product_attention over split qkv Linears, GELU tables, the mean
over the tokens as an avgpool), and the int8 program is within 1.5 points of float on the held-out
split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from examples.digits.train_export import load_split
from examples.vit_digits.models import vit
from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.runtime.evaluate import int8_predictions
from gpumesh.node.runtime.export import export_model
from gpumesh.node.runtime.files import load_program, read_tensors, save_program

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "vit_digits"


def test_committed_weights_export_to_the_committed_program_within_1_5_points(tmp_path):
    model = vit()
    model.load_state_dict(read_tensors(EXAMPLE / "vit" / "state_dict.safetensors", as_torch=True))
    model.eval()
    xtr, _, xte, yte = load_split()
    prog, arrays = export_model(model, torch.from_numpy(xtr[:256]), 32)
    committed = load_program(EXAMPLE / "vit")
    assert prog.root() == committed.program.root()
    assert all(np.array_equal(arrays[w.name], committed.weight_arrays[w.name]) for w in prog.weights)
    ops = [o.desc.opcode for o in prog.ops]
    assert ops.count(Opcode.SOFTMAX) == 2 and Opcode.AVGPOOL in ops and ops.count(Opcode.LUT) == 2
    assert all(o.desc.attr("causal") == 0 for o in prog.ops if o.desc.opcode == Opcode.SOFTMAX)
    save_program(tmp_path, prog, arrays)
    with torch.no_grad():
        float_acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    int8_acc = float((int8_predictions(load_program(tmp_path), xte) == yte).mean())
    print(f"\nvit digits: float {100 * float_acc:.2f}% int8 {100 * int8_acc:.2f}% ({len(prog.ops)} ops)")
    assert float_acc > 0.9 and abs(float_acc - int8_acc) <= 0.015
    meta = json.loads((EXAMPLE / "vit" / "program.json").read_text())["meta"]
    assert abs(meta["float_accuracy"] - float_acc) < 1e-9
