"""Text generation as a job on a real anvil + the embedded IPFS node + torch, with an in-process
worker: a text-generation program (a seeded tiny GPT, node/runtime/export_generate.py),
`program inputs --text` packs 3 prompts into 2 units of 2, `job post --samples 3` posts them, the
worker runs them, and `job result` verifies the outputs against the on-chain result root and
prints the 3 real prompts' generated text (the padding prompt left out), equal to the local run."""

from __future__ import annotations

import json

import pytest
import torch

from gpumesh.client.chain.types import JobState
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.export_generate import export_generation
from gpumesh.node.runtime.files import load_program, load_units, save_program
from tests.integration.poster.test_poster_cli import _post_args
from tests.unit.runtime.tiny_gpt import TinyGPT, stdlib_bytes, windows

pytestmark = pytest.mark.integration
P, N = 8, 4


def test_generation_job_result_prints_the_generated_text(env, gm, tmp_path):
    torch.manual_seed(3)
    prog, arrays = export_generation(TinyGPT(layers=1).eval(), windows(stdlib_bytes(["shlex.py"]), P + N - 1, 16, 1),
                                     2, N)
    save_program(tmp_path / "prog", prog, arrays)
    (tmp_path / "prompts.txt").write_bytes(b"def f(x):\nimport os\n\xc3\xa9t\xc3\xa9\n")
    out, _ = gm("program", "inputs", str(tmp_path / "prog"), "--text", str(tmp_path / "prompts.txt"),
                "--out", str(tmp_path / "in.safetensors"), "--json")
    assert json.loads(out)["units"] == 2 and json.loads(out)["padding"] == 1
    _, err = gm(*_post_args(gm, "--program", str(tmp_path / "prog"), "--inputs", str(tmp_path / "in.safetensors"),
                            "--class-names", "a,b"), code=2)
    assert "--class-names: a text-generation program outputs generated tokens" in err
    out, _ = gm(*_post_args(gm, "--program", str(tmp_path / "prog"), "--inputs", str(tmp_path / "in.safetensors"),
                            "--samples", "3", "--json"))
    job_id = json.loads(out)["job_id"]
    env.registry(2).stake(10**18)
    w = env.worker()
    market = env.market()
    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)

    out, _ = gm("job", "result", str(job_id), "-o", str(tmp_path / "res"), "--json", *gm.d)
    res = json.loads(out)
    bundle = load_program(tmp_path / "prog")
    toks = Executor(bundle).run(load_units(tmp_path / "in.safetensors", bundle.program)).outputs.reshape(-1, N)
    want = [bytes(t.tolist()).decode("utf-8", errors="replace") for t in toks[:3]]
    assert res["samples"] == 3 and res["texts"] == want
    assert json.loads((tmp_path / "res/texts.json").read_text()) == want
    assert toks.shape == (4, N)  # 3 prompts and 1 padding prompt
    out, _ = gm("job", "result", str(job_id), "-o", str(tmp_path / "res2"), *gm.d)
    print("\n" + out)
    assert "verified against the on-chain result root" in out
    assert f"job {job_id}: generated text of 3 prompts (first 3)" in out
    assert all(f"{i:5d}  {t!r}" in out for i, t in enumerate(want))
