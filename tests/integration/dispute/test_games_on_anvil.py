"""Whole dispute games on anvil between the Python strategies (gpumesh.node.dispute) over a toy job
(ToyStepper and its Python twin): a worker that corrupts one element loses and is slashed; a
challenger that disputes a correct result loses its bond; each side loses when its clock runs out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpumesh.client.core.game import Outcome, Reason, bond_burn, total_moves
from gpumesh.client.core.merkle import program_root
from tests.integration.dispute.harness import play, resolved_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "dispute"))
from toy import ToyJob, ToyProver  # noqa: E402

pytestmark = pytest.mark.integration

BOND = 10**18
JOB = 1
# 5 units, 6 ops; sizes straddle leaf boundaries (partial last leaves, padding leaves)
SIZES = [2100, 1500, 3000, 200, 1025, 2500, 1300]


def setup_game(chain, job: ToyJob, worker_traces: dict[int, list[bytes]]):
    honest, worker = job.player(), job.player(worker_traces)
    prog = job.program
    result = worker.result_levels[-1][0]
    chain.post_job(JOB, result, program_root(1, prog.num_ops, 0, prog.ops_root), job.inputs_root,
                   len(job.unit_inputs), BOND)
    return honest, worker, chain.challenge(JOB, BOND)


def corrupt(job: ToyJob, u: int, t: int, pos: int, propagate: bool = True) -> dict[int, list[bytes]]:
    """The worker's trace of unit u with byte `pos` of op t flipped (later ops recomputed)."""
    from toy import apply

    outs = job.run(u)
    b = bytearray(outs[t])
    b[pos] ^= 0x5A
    outs[t] = bytes(b)
    if propagate:
        for k in range(t + 1, len(outs)):
            outs[k] = apply(job.descriptors[k], outs[k - 1])
    return {u: outs}


@pytest.mark.parametrize(
    ("k", "unit", "op", "pos"),
    [
        (1, 2, 0, 17),  # first op
        (2, 1, 3, 50),  # a middle op (op 4 reads bytes 0..1024 of op 3)
        (4, 4, 5, 1299),  # last op, last element of its tensor
        (1, 0, 5, 1299),  # last element, k = 1
    ],
)
def test_corrupt_worker_loses_and_is_slashed(make_chain, k, unit, op, pos):
    chain = make_chain(k)
    job = ToyJob.random("anvil", 5, SIZES)
    honest, worker, gid = setup_game(chain, job, corrupt(job, unit, op, pos))
    g = play(chain, gid, worker, honest, ToyProver(job))
    assert Outcome(g[5]) == Outcome.CHALLENGER_WON
    assert resolved_reason(chain, gid) == Reason.ONE_STEP
    assert (g[14], g[15]) == (unit, op), "the disputed unit and the FIRST wrong op"
    assert chain.market.functions.isSlashed(JOB).call()
    assert chain.game.functions.credits(chain.challenger).call() == BOND
    moves = len([x for x in chain.gas if x[0] != "ResolveTimeout"])
    assert moves == total_moves(5, 6, SIZES[op + 1], k)


def test_challenger_disputing_a_correct_result_loses_its_bond(make_chain):
    chain = make_chain(2)
    job = ToyJob.random("anvil", 5, SIZES)
    honest, worker, gid = setup_game(chain, job, {})
    # The challenger believes unit 3's op 2 differs (a bug on its side): it plays its wrong data.
    wrong = job.player(corrupt(job, 3, 2, 5))
    g = play(chain, gid, worker, wrong, ToyProver(job))
    assert Outcome(g[5]) == Outcome.WORKER_WON
    assert resolved_reason(chain, gid) == Reason.ONE_STEP
    assert not chain.market.functions.isSlashed(JOB).call()
    burn = bond_burn(BOND)
    assert chain.game.functions.credits(chain.worker).call() == BOND - burn
    assert chain.game.functions.burned().call() == burn


def test_worker_that_stops_answering_loses_on_time(make_chain):
    chain = make_chain(4)
    job = ToyJob.random("anvil", 5, SIZES)
    honest, worker, gid = setup_game(chain, job, corrupt(job, 0, 1, 3))
    g = play(chain, gid, worker, honest, ToyProver(job), stall="worker")
    assert Outcome(g[5]) == Outcome.CHALLENGER_WON
    assert resolved_reason(chain, gid) == Reason.TIMEOUT
    assert chain.market.functions.isSlashed(JOB).call()


def test_challenger_that_stops_answering_loses_on_time(make_chain):
    chain = make_chain(4)
    job = ToyJob.random("anvil", 5, SIZES)
    honest, worker, gid = setup_game(chain, job, corrupt(job, 0, 1, 3))
    g = play(chain, gid, worker, honest, ToyProver(job), stall="challenger")
    assert Outcome(g[5]) == Outcome.WORKER_WON
    assert resolved_reason(chain, gid) == Reason.TIMEOUT
    assert not chain.market.functions.isSlashed(JOB).call()
