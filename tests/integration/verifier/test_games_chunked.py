"""End to end on anvil: the two models that the one-step bounds used to refuse, exported with
their reductions chunked (docs/protocol.md 5.7.7), traced by the torch executor and DISPUTED at a
chunked op with the real DisputeGame + Int8Verifier:

(a) a linear head from 16 inputs to 131,072 int32 logits (seeded weights), argmax -> chunkmax
    (8 chunks of 16,384) + pairargmax;
(b) a global avgpool over a [1, 128, 128, 256] map (the unit input [1, 256, 128, 128] NCHW,
    transposed to NHWC by the export) -> chunksum (44 chunks of 377 positions per channel) +
    sumrequant, then argmax over the 256 pooled channels.

The worker corrupts one element of a chunked op's output (the error propagates); the game plays
down to that op's one-step and the challenger wins. Prints the step gas and the largest other move.
Job / game plumbing: test_games_digits.Job and tests/integration/dispute/harness.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.runtime.export import export_model
from gpumesh.node.runtime.files import load_program, save_program
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses  # noqa: F401 - fixture
from tests.unit.runtime.test_chunked_export import GlobalPool

pytestmark = pytest.mark.integration
UNITS = 2


def _job(tmp, model: nn.Module, calib: torch.Tensor, units: np.ndarray) -> Job:
    prog, arrays = export_model(model, calib, 1)
    save_program(tmp, prog, arrays)
    return Job(load_program(tmp), units)


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Job:
    torch.manual_seed(12)
    units = np.random.default_rng(12).integers(-128, 128, (UNITS, 1, 16)).astype(np.int8)
    return _job(tmp_path_factory.mktemp("head"), nn.Sequential(nn.Linear(16, 131072)), torch.randn(32, 16), units)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Job:
    units = np.random.default_rng(13).integers(-128, 128, (UNITS, 1, 256, 128, 128)).astype(np.int8)
    return _job(tmp_path_factory.mktemp("pool"), GlobalPool(), torch.randn(2, 256, 128, 128), units)


@pytest.mark.parametrize(
    ("model", "op", "element", "opcode"),
    [
        ("head", 1, 5, Opcode.CHUNKMAX),  # the index of chunk 2
        ("head", 2, 0, Opcode.PAIRARGMAX),
        ("pool", 1, 255 * 44, Opcode.CHUNKSUM),  # channel 255, chunk 0: a full chunk of 377 positions
        ("pool", 1, 256 * 44 - 1, Opcode.CHUNKSUM),  # channel 255, the short last chunk (173 positions)
        ("pool", 2, 100, Opcode.SUMREQUANT),
    ],
    ids=["head-chunkmax", "head-pairargmax", "pool-chunksum-full", "pool-chunksum-last", "pool-sumrequant"],
)
def test_worker_corrupting_a_chunked_op_loses(chain, request, model, op, element, opcode):  # noqa: F811
    job: Job = request.getfixturevalue(model)
    assert job.prog.ops[op].desc.opcode == opcode
    moves = corrupt_worker_loses(chain, job, 1, op, element)
    gas = dict(chain.gas)
    others = max(g_ for name, g_ in moves if name != "Step")
    print(f"\n{model} op {op} ({opcode.name.lower()}) element {element}: step {gas['Step']:,} gas, "
          f"largest other move {others:,}, moves {len(moves)}, total {sum(g_ for _, g_ in moves):,}")
    assert gas["Step"] < 5_000_000
