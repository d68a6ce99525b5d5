"""`gpumesh program check` lists every layer the op set cannot express at once; `program build`
explains how to convert a `.pt` state dict, and builds a token program (a tiny GPT) whose report
gives the int8 vs float next-token agreement. Real CLI processes, real torch."""

from __future__ import annotations

import json
import os
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


def test_a_model_file_imports_its_own_folder_and_a_failed_import_is_one_line(tmp_path):
    """The model file's folder is on the import path (as for `python FILE.py`): a model split over
    two files of one project checks from any current folder; an import that fails is one line,
    exit 2, naming the file (not an unexpected error with a traceback)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "layers.py").write_text("import torch.nn as nn\n\ndef mlp():\n    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))\n")
    (proj / "model.py").write_text("from layers import mlp\n\ndef factory():\n    return mlp()\n")
    r = subprocess.run([*GPUMESH, "program", "check", "--model", f"{proj / 'model.py'}:factory"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    (proj / "bad.py").write_text("from no_such_project_module import thing\n")
    r = _cli("program", "check", "--model", f"{proj / 'bad.py'}:factory")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "importing" in r.stderr and "ModuleNotFoundError: No module named 'no_such_project_module'" in r.stderr


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_read(tmp_path):
    """A safetensors file opens with its header length (8 bytes, little-endian): one of 128 mod 256
    starts with 0x80, a pickle's first byte. The JSON header's "{" after it tells them apart."""
    import struct

    from gpumesh.client.cli.program_cmd import _load_st

    data = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (640 - len(header))  # 640 = 2 * 256 + 128: the file's first byte is 0x80
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    assert path.read_bytes()[:1] == b"\x80"
    assert _load_st(str(path))["w"].flatten().tolist() == [1.0, 2.0, 3.0, 4.0]


def test_build_of_a_model_outside_the_op_set_is_one_line_with_checks_exit_code(tmp_path):
    """`program build` refuses the model `program check` lists, in one line, with the same exit
    code (5), not the unexpected-error code 1."""
    models = _models(tmp_path)
    torch.manual_seed(0)
    from torch import nn

    class Mixed(nn.Module):  # the state dict of MODELS' Mixed
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.norm = nn.Conv1d(4, 4, 3), nn.GELU(), nn.BatchNorm1d(4)
            self.rnn, self.fc = nn.GRU(4, 4), nn.Linear(4, 2)

    save_file({k: v.contiguous() for k, v in Mixed().state_dict().items()}, str(tmp_path / "sd.safetensors"))
    save_file({"x": torch.randn(16, 4)}, str(tmp_path / "calib.safetensors"))
    r = _cli("program", "build", "--model", f"{models}:mixed", "--state-dict", str(tmp_path / "sd.safetensors"),
             "--calib", str(tmp_path / "calib.safetensors"), "--out", str(tmp_path / "prog"))
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("\n") == 1 and "conv (nn.Conv1d): use Conv2d" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "prog").exists()
