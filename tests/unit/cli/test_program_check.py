"""`gpumesh program check` lists every layer the op set cannot express at once; `program build`
explains how to convert a `.pt` state dict, and builds a token program (a tiny GPT) whose report
gives the int8 vs float next-token agreement. Real CLI processes, real torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[3]
GPUMESH = [sys.executable, "-m", "gpumesh.client.cli.main"]

MODELS = textwrap.dedent('''
    import torch.nn as nn

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 4, 3)
            self.act = nn.GELU()
            self.norm = nn.BatchNorm1d(4)
            self.rnn = nn.GRU(4, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.act(x))

    class Fine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    def mixed():
        return Mixed()

    def fine():
        return Fine()

    def gpt():
        from tests.unit.runtime.tiny_gpt import TinyGPT
        return TinyGPT()
''')


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GPUMESH, *args], capture_output=True, text=True, cwd=REPO, timeout=180)


def _models(tmp_path: Path) -> Path:
    p = tmp_path / "models.py"
    p.write_text(MODELS)
    return p


def test_check_lists_every_unsupported_layer_at_once(tmp_path):
    r = _cli("program", "check", "--model", f"{_models(tmp_path)}:mixed")
    assert r.returncode == 5, r.stderr
    assert r.stdout.splitlines() == [
        "conv (nn.Conv1d): use Conv2d with a 1-high kernel",
        "norm (nn.BatchNorm1d): fold it into the Linear before it (w * g, (b - mean) * g + beta) before exporting",
        "rnn (nn.GRU): recurrent layers are not in the op set; a transformer block exports",
    ]
    assert r.stderr.strip().endswith(":mixed: 3 layers not in the op set") and r.stderr.count("\n") == 1


def test_check_passes_a_supported_model_and_runs_its_export(tmp_path):
    models = _models(tmp_path)
    torch.manual_seed(0)
    from torch import nn

    fine = nn.ModuleDict({"fc1": nn.Linear(4, 8), "fc2": nn.Linear(8, 2)})
    save_file({k: v.contiguous() for k, v in fine.state_dict().items()}, str(tmp_path / "sd.safetensors"))
    save_file({"x": torch.randn(16, 4)}, str(tmp_path / "calib.safetensors"))
    r = _cli("program", "check", "--model", f"{models}:fine", "--calib", str(tmp_path / "calib.safetensors"),
             "--state-dict", str(tmp_path / "sd.safetensors"), "--unit-batch", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("every layer and call is in the op set; the export gives 4 ops")


def test_build_explains_how_to_convert_a_pt_state_dict(tmp_path):
    models = _models(tmp_path)
    pt = tmp_path / "weights.pt"
    torch.save({"fc1.weight": torch.zeros(8, 4)}, pt)  # the file a poster has; never loaded by gpumesh
    save_file({"x": torch.randn(16, 4)}, str(tmp_path / "calib.safetensors"))
    r = _cli("program", "build", "--model", f"{models}:fine", "--state-dict", str(pt),
             "--calib", str(tmp_path / "calib.safetensors"), "--out", str(tmp_path / "prog"))
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "is a PyTorch pickle (torch.save)" in line
    assert f"torch.load('{pt}', weights_only=True)" in line and str(tmp_path / "weights.safetensors") in line


def test_build_a_token_program_reports_next_token_agreement(tmp_path):
    from tests.unit.runtime.tiny_gpt import TinyGPT, stdlib_bytes, windows

    models = _models(tmp_path)
    torch.manual_seed(5)
    save_file({k: v.contiguous() for k, v in TinyGPT().state_dict().items()}, str(tmp_path / "sd.safetensors"))
    save_file({"ids": windows(stdlib_bytes(["shlex.py"]), 32, 16, 1)}, str(tmp_path / "calib.safetensors"))
    save_file({"ids": windows(stdlib_bytes(["glob.py"]), 32, 16, 2)}, str(tmp_path / "eval.safetensors"))
    r = _cli("program", "build", "--model", f"{models}:gpt", "--state-dict", str(tmp_path / "sd.safetensors"),
             "--calib", str(tmp_path / "calib.safetensors"), "--eval", str(tmp_path / "eval.safetensors"),
             "--out", str(tmp_path / "prog"), "--unit-batch", "4", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["next_token_agreement"] >= 0.85 and 0 <= rep["int8_next_token_accuracy"] <= 1
    prog = json.loads((tmp_path / "prog" / "program.json").read_text())
    assert prog["input"] == {"dtype": "int8", "name": "idx", "shape": [4, 32]}
    assert prog["meta"]["input_kind"] == "tokens"
