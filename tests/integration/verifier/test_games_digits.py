"""Whole dispute games on anvil with the REAL one-step verifier: DisputeGame + MockMarket +
Int8Verifier, played by the Python strategies (worker_move, challenger_move with Int8Prover) over
the digits CNN program (examples/digits/cnn: transpose, im2col, linear, maxpool, add, avgpool,
argmax) on three units of its test inputs, traced by the torch executor.

A worker that corrupts one element of the first op, of middle ops (a linear, the residual add) or
the last element of the last op loses at the one-step and is slashed; an honest worker wins against
a challenger whose own trace is wrong (it disputes a correct result and loses its bond).
The game harness (Chain, play) is tests/integration/dispute/harness.py, imported, not copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpumesh.client.core.game import SPLIT_BITS, Outcome, Reason, bond_burn, total_moves
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.client.core.program import inputs_root
from gpumesh.node.dispute.int8_prover import Int8Prover, JobInputs
from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import ProgramBundle, load_program, load_units
from tests.integration.dispute.harness import Chain, play, resolved_reason

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CNN = ROOT / "examples" / "digits" / "cnn"
INPUTS = ROOT / "examples" / "digits" / "data" / "test_inputs_cnn.safetensors"
UNITS = 3
BOND = 10**18
JOB = 1


@pytest.fixture()
def chain(anvil, verifier_artifacts):
    snap = anvil.rpc("evm_snapshot")
    yield Chain(anvil, verifier_artifacts, SPLIT_BITS, stepper="Int8Verifier")
    assert anvil.rpc("evm_revert", [snap]) is True


class Job:
    """A program (the CNN by default), units of its inputs (three of the CNN's test inputs), honest
    traces (the torch executor) and a re-run with one corrupted element whose error propagates
    through the later ops. Also used by test_games_chunked.py."""

    def __init__(self, bundle: ProgramBundle | None = None, units: np.ndarray | None = None) -> None:
        self.bundle = bundle or load_program(CNN)
        self.prog = self.bundle.program
        self.units = units if units is not None else load_units(INPUTS, self.prog)[:UNITS]
        self.n = len(self.units)
        self.ex = Executor(self.bundle)
        self.traces = [self.ex.trace(u) for u in self.units]
        self.weights = [self.bundle.weight_bytes[w.name] for w in self.prog.weights]
        self.unit_inputs = [t.unit_input for t in self.traces]
        self.inputs = JobInputs(self.weights, self.unit_inputs)
        self.program = Program(num_weights=len(self.prog.weights), descriptors=tuple(self.prog.descriptors()))

    def run(self, u: int, corrupt: tuple[int, int] | None = None) -> list[bytes]:
        """Op outputs of unit u; `corrupt = (op, element)` flips bits of that element's low byte."""
        ws = [torch.from_numpy(np.array(self.bundle.weight_arrays[w.name], copy=True)) for w in self.prog.weights]
        x = torch.from_numpy(np.ascontiguousarray(self.units[u])).reshape(self.prog.input.type.shape)
        outs: list[torch.Tensor] = []
        for j, op in enumerate(self.prog.ops):
            d = op.desc
            xs = [ws[s.index] if s.kind == SlotKind.WEIGHT else x if s.kind == SlotKind.UNIT_INPUT else outs[s.index]
                  for s in d.inputs]
            y = kernels.run_op(d, xs)
            if corrupt is not None and corrupt[0] == j:
                b = bytearray(np.ascontiguousarray(y.numpy()).tobytes())
                b[corrupt[1] * d.out.dtype.width] ^= 0x5A
                y = torch.from_numpy(np.frombuffer(bytes(b), dtype=y.numpy().dtype).reshape(y.shape).copy())
            outs.append(y)
        return [np.ascontiguousarray(o.numpy()).tobytes() for o in outs]

    def wrong_result(self, u: int, op: int, element: int) -> list[bytes]:
        """Unit u's op outputs with `element` of op `op` corrupted and the error propagated. Most
        single errors vanish in the final argmax (a correct result is not disputable), so if the
        output came out right the worker also lies about output element 0: its first wrong op is
        still `op`, and its result root is wrong."""
        outs = self.run(u, (op, element))
        if outs[-1] == self.traces[u].outputs[-1]:
            last = bytearray(outs[-1])
            last[0] ^= 0x01
            outs[-1] = bytes(last)
        return outs

    def player(self, traces: dict[int, list[bytes]] | None = None) -> PlayerData:
        traces = dict(traces or {})
        cache: dict[int, UnitTrace] = {}

        def trace(u: int) -> UnitTrace:
            if u not in cache:
                cache[u] = UnitTrace(traces.get(u) or list(self.traces[u].outputs))
            return cache[u]

        roots = tuple(trace(u).roots[-1] for u in range(self.n))
        return PlayerData(self.program, roots, trace)


@pytest.fixture(scope="module")
def job() -> Job:
    return Job()


def test_job_commitments_agree(job):
    """The prover's job view, the program module and the executor agree before any game."""
    assert job.inputs.inputs_root == inputs_root(job.prog, job.bundle.weight_bytes, job.unit_inputs)
    for u in range(job.n):
        assert job.run(u) == list(job.traces[u].outputs), "re-run without corruption == executor trace"


def _setup(chain, job: Job, worker_traces: dict[int, list[bytes]]):
    worker = job.player(worker_traces)
    chain.post_job(JOB, worker.result_levels[-1][0], job.prog.root(), job.inputs.inputs_root, job.n, BOND)
    return worker, chain.challenge(JOB, BOND)


@pytest.mark.parametrize(
    ("unit", "op", "element"),
    [
        (0, 0, 17),  # first op (transpose of the unit input)
        (1, 4, 3000),  # a middle op: conv-as-linear, per-channel requant
        (2, 8, 200),  # a middle op: the residual add (two op-output inputs)
        (1, 11, 31),  # last op (argmax, int32), last element of its tensor
    ],
    ids=["first-op", "middle-linear", "middle-add", "last-op-last-element"],
)
def test_corrupt_worker_loses_to_the_real_verifier(chain, job, unit, op, element):
    moves = corrupt_worker_loses(chain, job, unit, op, element)
    gas = dict(chain.gas)
    print(f"\nop {op} ({job.prog.ops[op].desc.opcode.name.lower()}) element {element}: step {gas['Step']:,} gas, "
          f"proveOp {gas['ProveOp']:,}, moves {len(moves)}, total {sum(g for _, g in moves):,}")


def game_gas(moves: list[tuple[str, int]]) -> tuple[int, str]:
    """(the one-step's gas, a printable summary) of a game's moves from corrupt_worker_loses."""
    gas = [g for _, g in moves]
    step, prove = dict(moves)["Step"], dict(moves)["ProveOp"]
    return step, (f"moves {len(moves)}, gas per move max {max(gas):,} (step {step:,}), proveOp {prove:,}, "
                  f"total {sum(gas):,}")


def corrupt_worker_loses(chain, job: Job, unit: int, op: int, element: int) -> list[tuple[str, int]]:
    """Play a game against a worker whose unit `unit` has `element` of op `op` corrupted: the
    challenger wins at that op's one-step, the worker is slashed. Returns the moves' (name, gas)."""
    out = job.prog.ops[op].desc.out
    worker, gid = _setup(chain, job, {unit: job.wrong_result(unit, op, element)})
    g = play(chain, gid, worker, job.player(), Int8Prover(job.inputs))
    assert Outcome(g[5]) == Outcome.CHALLENGER_WON
    assert resolved_reason(chain, gid) == Reason.ONE_STEP
    assert (g[14], g[15]) == (unit, op), "the disputed unit and the FIRST wrong op"
    assert chain.market.functions.isSlashed(JOB).call()
    assert chain.game.functions.credits(chain.challenger).call() == BOND
    moves = [x for x in chain.gas if x[0] != "ResolveTimeout"]
    assert len(moves) == total_moves(job.n, len(job.prog.ops), out.nbytes, SPLIT_BITS)
    return moves


def test_challenger_disputing_a_correct_result_loses_its_bond(chain, job):
    worker, gid = _setup(chain, job, {})
    # The challenger's own trace of unit 2 is wrong at op 4 (a bug on its side): it disputes.
    wrong = job.player({2: job.wrong_result(2, 4, 777)})
    g = play(chain, gid, worker, wrong, Int8Prover(job.inputs))
    assert Outcome(g[5]) == Outcome.WORKER_WON
    assert resolved_reason(chain, gid) == Reason.ONE_STEP
    assert (g[14], g[15]) == (2, 4)
    assert not chain.market.functions.isSlashed(JOB).call()
    burn = bond_burn(BOND)
    assert chain.game.functions.credits(chain.worker).call() == BOND - burn
