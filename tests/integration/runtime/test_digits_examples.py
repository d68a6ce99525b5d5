"""The digits examples end to end with real torch: train + export (seconds), int8 accuracy within
1.5 points of float on the held-out split, and `gpumesh program run` on the exported programs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpumesh.client.core import merkle
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, load_units, save_units

REPO = Path(__file__).resolve().parents[3]
GPUMESH = [sys.executable, "-m", "gpumesh.client.cli.main"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    sys.path.insert(0, str(REPO))
    from examples.digits.train_export import build_examples

    out = tmp_path_factory.mktemp("digits")
    return out, build_examples(out, unit_batch=32, epochs=40)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_int8_accuracy_within_1_5_points_of_float(built, name):
    _, report = built
    r = report[name]
    print(f"{name}: float {100 * r['float_accuracy']:.2f}% int8 {100 * r['int8_accuracy']:.2f}%")
    assert r["float_accuracy"] > 0.9  # the float model really learned the task
    assert abs(r["float_accuracy"] - r["int8_accuracy"]) <= 0.015


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GPUMESH, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_program_run_prints_the_result_root(built):
    out, _ = built
    inputs = out / "data" / "test_inputs_cnn.safetensors"
    p = _cli("program", "run", str(out / "cnn"), "--inputs", str(inputs), "--json",
             "--outputs", str(out / "outputs.safetensors"))
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    bundle = load_program(out / "cnn")
    units = load_units(inputs, bundle.program)
    # independent recomputation: roots tree over the tensor roots of each unit's output bytes
    outs = [Executor(bundle).run_unit(u) for u in units]
    want = merkle.roots_root([merkle.tensor_root(np.ascontiguousarray(o).tobytes()) for o in outs])
    assert rep["result_root"] == "0x" + want.hex()
    assert rep["units"] == len(units)
    assert rep["program_root"] == "0x" + bundle.program.root().hex()


def test_program_run_rejects_a_bad_inputs_file_in_one_line(built, tmp_path):
    out, _ = built
    bad = tmp_path / "bad.safetensors"
    save_units(bad, np.zeros((2, 5, 5), dtype=np.int8))
    p = _cli("program", "run", str(out / "mlp"), "--inputs", str(bad))
    assert p.returncode == 5
    assert p.stderr.count("\n") == 1 and "units tensor" in p.stderr


def test_program_show_json(built):
    out, _ = built
    p = _cli("program", "show", str(out / "mlp"), "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["ops"][-1]["op"] == "argmax" and info["output"] == "int32[32]"


def test_program_build_bad_inputs_are_one_line(built, tmp_path):
    """A missing, unreadable or mismatched state_dict is one stderr line with a non-zero exit."""
    out, _ = built
    ex = REPO / "examples" / "digits"
    base = ["program", "build", "--calib", str(ex / "data" / "calib.safetensors"), "--out", str(tmp_path / "p")]
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    cases = [
        (["--model", f"{ex / 'models.py'}:mlp", "--state-dict", str(tmp_path / "none")], 2, "no such file"),
        (["--model", f"{ex / 'models.py'}:mlp", "--state-dict", str(garbage)], 5, "not a readable safetensors file"),
        (["--model", f"{ex / 'models.py'}:cnn", "--state-dict", str(ex / "mlp" / "state_dict.safetensors")], 5,
         "does not fit"),
    ]
    for args, code, msg in cases:
        p = _cli(*base, *args)
        assert p.returncode == code, p.stderr
        assert p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr
    assert not (tmp_path / "p").exists()


def test_program_inputs_quantizes_float_samples_into_the_units_file(built, tmp_path):
    """`program inputs` gives exactly the units file the examples were built with (input scale from
    the program's meta, last unit zero-padded), and refuses bad data in one line."""
    from safetensors.numpy import save_file

    out, _ = built
    dst = tmp_path / "units.safetensors"
    p = _cli("program", "inputs", str(out / "mlp"), "--data", str(out / "data" / "test_float.safetensors"),
             "--out", str(dst), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    bundle = load_program(out / "mlp")
    want = load_units(out / "data" / "test_inputs_mlp.safetensors", bundle.program)
    assert np.array_equal(load_units(dst, bundle.program), want)
    assert (rep["units"], rep["samples"], rep["padding"]) == (len(want), 540, len(want) * 32 - 540)
    nan = np.zeros((3, 1, 8, 8), dtype=np.float32)
    nan[1, 0, 2, 2] = np.nan
    save_file({"x": nan}, str(tmp_path / "nan.safetensors"))
    save_file({"x": np.zeros((3, 8, 8), dtype=np.float32)}, str(tmp_path / "shape.safetensors"))
    for bad, msg in (("nan", "NaN or infinity"), ("shape", "the program takes")):
        p = _cli("program", "inputs", str(out / "mlp"), "--data", str(tmp_path / f"{bad}.safetensors"),
                 "--out", str(tmp_path / f"{bad}_units.safetensors"))
        assert p.returncode == 5 and p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr
        assert not (tmp_path / f"{bad}_units.safetensors").exists()
