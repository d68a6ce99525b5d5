"""End to end on anvil: the GPT-2-shaped program of examples/gpt2_shape at a tiny size (2 layers,
d 64, 4 heads, context 32; vocabulary 20,000 so that the LM head's top-k takes a chunk level (3 chunks of
8,192 logits; 7 at 50,257) traced by the torch executor and DISPUTED with the real DisputeGame +
Int8Verifier at the last block's attention softmax, at the top-k chunk level and at the final
top-k (the next token). The worker corrupts one element of that op (the error propagates); the
game plays down to that op's one-step and the challenger wins (test_games_digits.corrupt_worker_loses
asserts the outcome, the slashing and the move count). bench/bench_gpt2_dispute.py plays the
same games at the full GPT-2-small shape."""

from __future__ import annotations

import dataclasses

import pytest

from examples.gpt2_shape import build as gpt2
from gpumesh.client.core.ops.types import Opcode
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

CONFIG = dataclasses.replace(gpt2.PRESETS["tiny"], vocab=20_000)


@pytest.fixture(scope="module")
def job() -> Job:
    return Job(gpt2.bundle(CONFIG), gpt2.units(CONFIG, 2))


@pytest.mark.parametrize(
    ("name", "element", "opcode"),
    [
        ("b1.p", (3 * 32 + 31) * 32 + 20, Opcode.SOFTMAX),  # head 3, last query (whole causal row), key 20
        ("next.chunks0", 3, Opcode.TOPK),  # the index carried by chunk 1's best logit
        ("next", 0, Opcode.TOPK),  # the next token
    ],
    ids=["softmax", "topk-chunks", "topk-final"],
)
def test_worker_corrupting_a_gpt2_shape_op_loses(chain, job, name, element, opcode):  # noqa: F811
    op = next(j for j, o in enumerate(job.prog.ops) if o.name == name)
    assert job.prog.ops[op].desc.opcode == opcode
    moves = corrupt_worker_loses(chain, job, 1, op, element)
    step = dict(moves)["Step"]
    print(f"\n{name} (op {op}) element {element}: moves {len(moves)}, step {step:,} gas, "
          f"total {sum(g for _, g in moves):,}")
    assert step < 1_000_000
