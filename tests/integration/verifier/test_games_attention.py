"""End to end on anvil: the hand-built multi-head attention block (examples/attention: layernorm,
Q/K/V linears, head views, Q.K^T, causal softmax, P.V over V stored by rows, output linear,
residual add; T=16, D=64, 4 heads) traced by the torch executor and DISPUTED with the real
DisputeGame + Int8Verifier at its SOFTMAX op and at its LAYERNORM op.

The worker corrupts one element of that op's output (the error propagates through the later ops);
the game plays down to that op's one-step, the challenger wins and the worker is slashed (the
assertions are test_games_digits.corrupt_worker_loses). Prints the gas per move (max, total) and
the rounds per side; docs/protocol.md 5.7.5 quotes the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.attention import build
from gpumesh.client.core.ops.types import Opcode
from gpumesh.client.core.program import inputs_root
from gpumesh.node.runtime.files import load_program, load_units
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ATTENTION = Path(__file__).resolve().parents[3] / "examples" / "attention"
UNITS = 2
WORKER_MOVES = {"Reveal", "CommitTrace", "RevealLeaf", "AnswerData"}  # node/dispute/strategy.worker_move


@pytest.fixture(scope="module")
def attention() -> Job:
    bundle = load_program(ATTENTION)
    return Job(bundle, load_units(ATTENTION / "inputs.safetensors", bundle.program)[:UNITS])


def test_committed_example_is_what_build_writes(tmp_path, attention):
    """build.py regenerates the committed program, weights and inputs byte for byte; the job's
    commitments and the op-by-op kernel re-run agree with the executor trace before any game."""
    build.build(tmp_path)
    for name in ("program.json", "weights.safetensors", "inputs.safetensors"):
        assert (tmp_path / name).read_bytes() == (ATTENTION / name).read_bytes(), name
    assert attention.inputs.inputs_root == inputs_root(attention.prog, attention.bundle.weight_bytes,
                                                       attention.unit_inputs)
    for u in range(attention.n):
        assert attention.run(u) == list(attention.traces[u].outputs)


@pytest.mark.parametrize(
    ("op", "element", "opcode"),
    [
        (11, 3 * 256 + 15 * 16 + 7, Opcode.SOFTMAX),  # head 3, last query (whole causal row), key 7
        (0, 500, Opcode.LAYERNORM),  # token 7, channel 52
    ],
    ids=["softmax", "layernorm"],
)
def test_worker_corrupting_an_attention_op_loses(chain, attention, op, element, opcode):  # noqa: F811
    assert attention.prog.ops[op].desc.opcode == opcode
    moves = corrupt_worker_loses(chain, attention, 1, op, element)  # asserts the game ended at (1, op)
    gas = [g for _, g in moves]
    worker = sum(name in WORKER_MOVES for name, _ in moves)
    step, prove = dict(moves)["Step"], dict(moves)["ProveOp"]
    print(f"\nattention op {op} ({opcode.name.lower()}) element {element}: moves {len(moves)} "
          f"(worker {worker}, challenger {len(moves) - worker}), gas per move max {max(gas):,} "
          f"(step {step:,}), proveOp {prove:,}, largest other {max(g for name, g in moves if name != 'Step'):,}, total {sum(gas):,}")
    assert step < 5_000_000
