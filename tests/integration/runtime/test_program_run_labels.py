"""`gpumesh program run --labels`: accuracy of the shipped digits program against the labels, from a
JSON list (the format `job result --labels` takes) or a safetensors integer tensor, checked against an
independent count; bad label files are one line; the executor's progress callback reaches every unit
without changing a bit of the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, load_units
from tests.cli_run import run_cli

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
PROG = REPO / "examples/digits/mlp"
INPUTS = REPO / "examples/digits/data/test_inputs_mlp.safetensors"
LABELS = REPO / "examples/digits/data/test_labels.json"


def _run(capsys, tmp_path, *extra: str, code: int = 0):
    return run_cli(capsys, tmp_path / "home", "program", "run", str(PROG), "--inputs", str(INPUTS), *extra, code=code)


def test_accuracy_from_json_and_safetensors_labels(capsys, tmp_path):
    truth = np.array(json.loads(LABELS.read_text()))
    bundle = load_program(PROG)
    preds = Executor(bundle).run(load_units(INPUTS, bundle.program)).outputs.reshape(-1)[: len(truth)]
    want = float(np.mean(preds == truth))
    assert 0.9 < want < 1.0  # a real score, neither trivial nor perfect
    out, _ = _run(capsys, tmp_path, "--labels", str(LABELS), "--json")
    rep = json.loads(out)
    assert rep["accuracy"] == pytest.approx(want) and rep["labelled_samples"] == len(truth) == 540
    st = tmp_path / "labels.safetensors"
    save_file({"labels": truth.astype(np.int32)}, str(st))
    out, _ = _run(capsys, tmp_path, "--labels", str(st))
    assert out.splitlines()[-1] == f"accuracy {100 * want:.2f}% on 540 labelled samples"
    # fewer labels than samples: the first ones are scored
    few = tmp_path / "few.json"
    few.write_text(json.dumps(truth[:100].tolist()))
    rep = json.loads(_run(capsys, tmp_path, "--labels", str(few), "--json")[0])
    assert rep["accuracy"] == pytest.approx(float(np.mean(preds[:100] == truth[:100])))


def test_bad_label_files_are_one_line(capsys, tmp_path):
    many = tmp_path / "many.json"
    many.write_text(json.dumps([0] * 545))
    _, err = _run(capsys, tmp_path, "--labels", str(many), code=2)
    assert err == f"gpumesh: error: --labels {many}: 545 labels for 544 samples (17 units of 32)\n"
    floats = tmp_path / "f.safetensors"
    save_file({"y": np.zeros(4, np.float32)}, str(floats))
    _, err = _run(capsys, tmp_path, "--labels", str(floats), code=2)
    assert err == f"gpumesh: error: --labels {floats}: the tensor is float32, want integer class indices\n"
    notlist = tmp_path / "d.json"
    notlist.write_text('{"a": 1}')
    _, err = _run(capsys, tmp_path, "--labels", str(notlist), code=2)
    assert err == f"gpumesh: error: --labels {notlist}: want a JSON list of integers\n"


def test_progress_reaches_every_unit_and_changes_no_bit():
    bundle = load_program(PROG)
    units = load_units(INPUTS, bundle.program)
    ex = Executor(bundle)
    ex.rows = 64  # two units per pass: several calls
    seen: list[int] = []
    res = ex.run(units, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(units) and len(seen) == 9
    assert res.result_root == Executor(bundle).run(units).result_root
