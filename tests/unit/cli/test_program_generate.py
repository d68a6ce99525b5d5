"""Text generation from the CLI: `program build --generate N` writes a text-generation program (a
tiny seeded GPT), `program inputs --text` packs one prompt per line into its prompt window (left
padding with newlines, long prompts cut to their last P bytes, the last unit topped up with empty
prompts), `program run` prints each real prompt's generated text, and `job result`'s printer does
the same from a verified result (the spec's meta `samples` trims the padding). Real torch, the
entry point in-process (tests/cli_run.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpumesh.client.cli.job_cmd import _print_result
from gpumesh.node.jobs.results import JobResult
from gpumesh.node.runtime.evaluate import quantize_units
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_outputs, load_program, load_units
from gpumesh.node.runtime.textgen import PAD_BYTE
from tests.cli_run import run_cli
from tests.unit.runtime.tiny_gpt import TinyGPT, stdlib_bytes, windows

P, N, B = 12, 5, 4
PROMPTS = [b"def main(", b"", "caf\u00e9 = ".encode(), b"import os, sys, re, json  # a prompt longer than P", b"x"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    (tmp / "models.py").write_text("def gpt():\n    from tests.unit.runtime.tiny_gpt import TinyGPT\n"
                                   "    return TinyGPT()\n")
    torch.manual_seed(5)
    save_file({k: v.contiguous() for k, v in TinyGPT().state_dict().items()}, str(tmp / "sd.safetensors"))
    save_file({"ids": windows(stdlib_bytes(["shlex.py"]), P + N - 1, 16, 1)}, str(tmp / "calib.safetensors"))
    save_file({"ids": windows(stdlib_bytes(["glob.py"]), P + N - 1, 8, 2)}, str(tmp / "eval.safetensors"))
    (tmp / "prompts.txt").write_bytes(b"\n".join(PROMPTS) + b"\n")
    return tmp


def test_build_inputs_run_print_the_generated_text(built, capsys):
    tmp, home = built, built / "home"
    out, _ = run_cli(capsys, home, "program", "build", "--model", f"{tmp}/models.py:gpt", "--state-dict",
                     str(tmp / "sd.safetensors"), "--calib", str(tmp / "calib.safetensors"), "--eval",
                     str(tmp / "eval.safetensors"), "--out", str(tmp / "prog"), "--unit-batch", str(B),
                     "--generate", str(N), "--json")
    rep = json.loads(out)
    assert rep["task"] == "text-generation" and rep["prompt_len"] == P and rep["generate"] == N
    assert 0 <= rep["generated_token_agreement"] <= 1 and rep["prompts"] == 8
    bundle = load_program(tmp / "prog")
    assert bundle.program.input.type.shape == (B, P) and bundle.program.output_type.shape == (B, N)

    out, _ = run_cli(capsys, home, "program", "inputs", str(tmp / "prog"), "--text", str(tmp / "prompts.txt"),
                     "--out", str(tmp / "in.safetensors"))
    assert "5 prompts in 2 units of 4 (3 empty padding prompts; 1 cut to their last 12 bytes" in out
    units = load_units(tmp / "in.safetensors", bundle.program)
    ids = (units.reshape(-1, P).astype(np.int64) + 128)
    assert bytes(ids[0].tolist()) == b"\n" * 3 + b"def main("  # right-aligned, newline padding
    assert bytes(ids[3].tolist()) == PROMPTS[3][-P:]  # its last P bytes
    assert (ids[1] == PAD_BYTE).all() and (ids[5:] == PAD_BYTE).all()  # empty prompt, padding prompts

    out, _ = run_cli(capsys, home, "program", "run", str(tmp / "prog"), "--inputs", str(tmp / "in.safetensors"),
                     "--outputs", str(tmp / "out.safetensors"), "--samples", "5", "--json")
    texts = json.loads(out)["texts"]
    toks = Executor(bundle).run(quantize_units(bundle.program, ids)).outputs.reshape(-1, N)
    assert np.array_equal(load_outputs(tmp / "out.safetensors").reshape(-1, N), toks)
    assert texts == [bytes(t.tolist()).decode("utf-8", errors="replace") for t in toks[:5]]
    out, _ = run_cli(capsys, home, "program", "run", str(tmp / "prog"), "--inputs", str(tmp / "in.safetensors"),
                     "--samples", "5")
    assert "generated text of 5 prompts:" in out and f"    4  {texts[4]!r}" in out

    # job result's printer, from a verified result whose spec says 5 real samples
    res = JobResult(7, SimpleNamespace(meta={"samples": 5}), bundle.program, "cid", b"\0" * 32,
                    load_outputs(tmp / "out.safetensors"), b"")
    _print_result(res, {"job_id": 7}, tmp, None, True, 20, False, "verified", [])
    out = capsys.readouterr().out
    assert "job 7: generated text of 5 prompts (first 5)" in out and f"    2  {texts[2]!r}" in out
    assert json.loads((tmp / "texts.json").read_text()) == texts


def test_text_inputs_refusals(built, capsys):
    tmp, home = built, built / "home"
    (tmp / "empty.txt").write_bytes(b"")
    _, err = run_cli(capsys, home, "program", "inputs", str(tmp / "prog"), "--text", str(tmp / "empty.txt"),
                     "--out", str(tmp / "x.safetensors"), code=5)
    assert "no prompts" in err
    _, err = run_cli(capsys, home, "program", "inputs", str(tmp / "prog"), "--out", str(tmp / "x.safetensors"),
                     code=2)
    assert "one of --data" in err
