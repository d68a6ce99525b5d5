"""The demo's text-generation parts (node/demo/generation.py, genflip.py) on the committed byte GPT,
without a chain: the program the demo posts is the one `gpumesh program build --generate` writes
(same program root) and its inputs the ones `program inputs --text` packs (same inputs root); the
flip search picks an element of a DECODE step's softmax (k >= 1) whose flip, run by the cheating
worker's own FaultyExecutor, changes the generated text at exactly that prompt and byte; and the
search's recomputation agrees with the FaultyExecutor on flips that change nothing too (so its
"changes the text" is the executor's word, not a guess)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpumesh.client.chain.deploy import repo_root
from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.demo.generation import (
    GENERATE,
    MODEL,
    PROMPT_LEN,
    UNIT_BATCH,
    build_generation_program,
    prompt_inputs,
)
from gpumesh.node.demo.genflip import FlipSearch, step_of
from gpumesh.node.runtime.files import load_program, load_units
from gpumesh.node.worker.faults import Fault, executor_for, run_unit_at
from tests.cli_run import run_cli

pytestmark = pytest.mark.slow
EX = repo_root() / "examples" / "bytegpt"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo-gen")
    build_generation_program(tmp / "prog")
    prompts = prompt_inputs(tmp / "prog", EX / "prompts.txt", tmp / "in.safetensors")
    bundle = load_program(tmp / "prog")
    units = load_units(tmp / "in.safetensors", bundle.program)
    search = FlipSearch(bundle, units, len(prompts))
    return tmp, bundle, units, prompts, search


def test_the_demo_posts_what_program_build_and_inputs_write(demo, capsys, monkeypatch):
    tmp, bundle, _, prompts, _ = demo
    monkeypatch.chdir(repo_root())  # the poster names its model file as the demo's meta does
    out, _ = run_cli(capsys, tmp / "home", "program", "build", "--model", MODEL, "--state-dict",
                     str(EX / "state_dict.safetensors"), "--calib", str(EX / "calib.safetensors"), "--unit-batch",
                     str(UNIT_BATCH), "--generate", str(GENERATE), "--prompt-len", str(PROMPT_LEN),
                     "--out", str(tmp / "cli"), "--json")
    assert json.loads(out)["program_root"] == "0x" + bundle.program.root().hex()
    out, _ = run_cli(capsys, tmp / "home", "program", "inputs", str(tmp / "cli"), "--text", str(EX / "prompts.txt"),
                     "--out", str(tmp / "cli-in.safetensors"), "--json")
    rep = json.loads(out)
    assert rep["samples"] == len(prompts) == 8 and rep["units"] == 2 and rep["truncated"] == 0
    cli_units = load_units(tmp / "cli-in.safetensors", bundle.program)
    assert np.array_equal(cli_units, load_units(tmp / "in.safetensors", bundle.program))


def test_the_flip_sits_in_a_decode_step_softmax_and_changes_that_prompts_text(demo):
    _, bundle, units, prompts, search = demo
    flip = search.find()
    assert flip is not None
    op = bundle.program.ops[flip.op]
    assert op.desc.opcode == Opcode.SOFTMAX and flip.step >= 1 and step_of(op.name) == flip.step
    assert flip.op == search.softmax[flip.step][-1]  # the step's last softmax: the last layer
    assert flip.changing >= 1 and flip.cheat_token != flip.honest_token
    assert flip.margin == min(m[0] for m in search.margins())  # the easiest (prompt, step) to tip

    honest = search.ex.run(units).outputs.reshape(-1, GENERATE)
    cheat = run_unit_at(executor_for(bundle, "cpu", flip.fault), flip.unit, units[flip.unit]).reshape(-1, GENERATE)
    got = honest.copy()
    got[flip.unit * UNIT_BATCH : (flip.unit + 1) * UNIT_BATCH] = cheat
    changed = sorted({int(i) for i in np.nonzero((got != honest).any(axis=1))[0]})
    p = flip.unit * UNIT_BATCH + flip.row
    assert changed == [p] and p < len(prompts)
    # the bytes before the flipped step are the honest ones; the step's own byte is the search's
    assert np.array_equal(got[p, : flip.step], honest[p, : flip.step])
    assert (int(honest[p, flip.step]), int(got[p, flip.step])) == (flip.honest_token, flip.cheat_token)


def test_the_search_recomputes_what_the_faulty_executor_computes(demo):
    """One flip the search says changes the byte, two it says do not: the FaultyExecutor agrees."""
    _, bundle, units, _, search = demo
    margin, u, b, k, _ = search.margins()[0]
    _, tok0, outs = search.row_flips(u, b, k)
    hits = [o for o in outs if o.token != tok0]
    misses = [o for o in outs if o.token == tok0]
    assert hits and len(misses) >= 2
    honest = search.ex.run_unit(units[u]).reshape(UNIT_BATCH, GENERATE)
    for o in (max(hits, key=lambda o: o.lead), misses[0], misses[-1]):
        ex = executor_for(bundle, "cpu", Fault(u, search.softmax[k][-1], o.element))
        got = run_unit_at(ex, u, units[u]).reshape(UNIT_BATCH, GENERATE)
        assert int(got[b, k]) == o.token, (o, int(honest[b, k]))
        if o.token == tok0:
            assert np.array_equal(got, honest)  # a flip that changes nothing is no wrong result


def test_an_earlier_layers_flip_the_fallback_finds_changes_the_text(demo):
    """The fallback's earlier layer: in a row of small margin, a flip of the next-to-last layer's
    softmax that the search says tips the byte does tip it in the cheating worker's executor, and
    changes that prompt's text from that step on only (the row taken is the first of the 8 smallest
    margins with no last-layer flip that tips it, where there is one: the fallback's very case)."""
    _, bundle, units, _, search = demo
    rows = search.margins()[:8]
    plain = [r for r in rows if search.try_row(*r) is None]
    found = None
    for margin, u, b, k, second in plain + [r for r in rows if r not in plain]:
        flip = search.try_row(margin, u, b, k, second, layer=-2)
        if flip is not None:
            found = (u, b, k, flip)
            break
    assert found is not None, "no next-to-last-layer flip tips any of the 8 smallest-margin rows"
    u, b, k, flip = found
    assert flip.op == search.softmax[k][-2] and flip.layer == len(search.softmax[k]) - 2
    honest = search.ex.run_unit(units[u]).reshape(UNIT_BATCH, GENERATE)
    got = run_unit_at(executor_for(bundle, "cpu", flip.fault), u, units[u]).reshape(UNIT_BATCH, GENERATE)
    assert int(got[b, k]) == flip.cheat_token != int(honest[b, k]) == flip.honest_token
    assert np.array_equal(got[b, :k], honest[b, :k]) and np.array_equal(np.delete(got, b, 0), np.delete(honest, b, 0))
