"""End to end on anvil: the text-generation program of a rotary-position GPT (TinyGPT(pos="rope"):
the export's rope ops, node/runtime/export_ops.find_rope; prompt window 8, 3 tokens) DISPUTED with
the real DisputeGame + Int8Verifier inside its LAST decode step: a worker that corrupts one element
of that step's rope output (q's, and k's: the new row of the K cache), whose position comes from
`off` = 9, loses at that element's one-step and is slashed (the assertions are
test_games_digits.corrupt_worker_loses; the harness is test_games_generate's). Prints the gas."""

from __future__ import annotations

import pytest
import torch

from gpumesh.client.core.ops.types import Opcode
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses, game_gas  # noqa: F401 - fixture
from tests.unit.runtime.tiny_gpt import TinyGPT, generation_units

pytestmark = pytest.mark.integration

P, N = 8, 3


@pytest.fixture(scope="module")
def rope_generation(tmp_path_factory) -> Job:
    torch.manual_seed(3)
    bundle, units = generation_units(TinyGPT(layers=1, pos="rope").eval(), tmp_path_factory.mktemp("gen-rope"), P, N)
    return Job(bundle, units)


@pytest.mark.parametrize(("name", "element"), [
    ("add@2", 2 * 16 + 11),  # q [1, 4, 1, 16]: head 2, column 11 (second half: b*c + a*s)
    ("add_1@2", 1 * 16 + 3),  # k [1, 4, 1, 16]: head 1, column 3 (first half: a*c - b*s)
], ids=["q", "k"])
def test_worker_lying_about_a_decode_steps_rope_loses(chain, rope_generation, name, element):  # noqa: F811
    names = [o.name for o in rope_generation.prog.ops]
    op = names.index(name)
    d = rope_generation.prog.ops[op].desc
    assert d.opcode == Opcode.ROPE and d.attr("off") == P + N - 2 and d.out.shape == (1, 4, 1, 16)
    moves = corrupt_worker_loses(chain, rope_generation, 1, op, element)  # asserts the game ended at (1, op)
    step, summary = game_gas(moves)
    print(f"\nrotary generation program ({len(names)} ops) {name} element {element}: {summary}")
    assert step < 5_000_000
