"""End to end on anvil: a text-generation program (node/runtime/export_generate.py: a seeded tiny
GPT, prompt window 8, 3 tokens, so a prefill and two decode steps with the KV cache in the trace)
DISPUTED with the real DisputeGame + Int8Verifier inside its LAST decode step: a worker that
corrupts one element of that step's softmax, or one element of its K cache (a row the prefill
computed, carried by the concats), loses at that element's one-step and is slashed (the assertions
are test_games_digits.corrupt_worker_loses). Prints the gas per move and the rounds."""

from __future__ import annotations

import pytest
import torch

from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.runtime.evaluate import quantize_units
from gpumesh.node.runtime.export_generate import export_generation
from gpumesh.node.runtime.files import load_program, save_program
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses, game_gas  # noqa: F401 - fixture
from tests.unit.runtime.tiny_gpt import TinyGPT, stdlib_bytes, windows

pytestmark = pytest.mark.integration

P, N = 8, 3


@pytest.fixture(scope="module")
def generation(tmp_path_factory) -> Job:
    torch.manual_seed(3)
    model = TinyGPT(layers=1).eval()
    prog, arrays = export_generation(model, windows(stdlib_bytes(["shlex.py"]), P + N - 1, 16, 1), 1, N)
    folder = tmp_path_factory.mktemp("generate")
    save_program(folder, prog, arrays)
    bundle = load_program(folder)
    prompts = windows(stdlib_bytes(["glob.py"]), P, 2, 2)
    return Job(bundle, quantize_units(bundle.program, prompts.numpy()))


W = P + N - 1  # keys the last step's query reads: 10


@pytest.mark.parametrize(("name", "element"), [
    ("softmax@2", 3 * W + 4),  # [1, 4, 1, 10]: head 3, key 4 (a prompt position)
    ("transpose_1.kv@2", 3 * 16 + 5),  # K' [1, 4, 10, 16]: head 0, row 3 (the prefill's), channel 5
], ids=["softmax", "kv-cache"])
def test_worker_lying_inside_a_later_decode_step_loses(chain, generation, name, element):  # noqa: F811
    names = [o.name for o in generation.prog.ops]
    op = names.index(name)
    want = Opcode.SOFTMAX if name.startswith("softmax") else Opcode.CONCAT
    assert generation.prog.ops[op].desc.opcode == want
    moves = corrupt_worker_loses(chain, generation, 1, op, element)  # asserts the game ended at (1, op)
    step, summary = game_gas(moves)
    print(f"\ngeneration program ({len(names)} ops) {name} element {element}: {summary}")
    assert step < 5_000_000
