"""DisputeGameClient + Responder on a real anvil, over the toy world of the dispute tests
(DisputeGame + MockMarket + ToyStepper and its Python twin): two Responders with their own
signers and SQLite stores play whole games; the honest side wins; a player killed between recording
a signed move and broadcasting it resumes from its store and never signs a second move."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpumesh.client.chain.dispute import DisputeGameClient
from gpumesh.client.core.game import Outcome, Phase, Reason, Side, total_moves
from gpumesh.client.core.merkle import program_root
from gpumesh.client.services.accounts import dev_account
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.responder import Responder
from tests.integration.dispute.conftest import CLOCK, Chain, artifacts  # noqa: F401 - fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "dispute"))
from toy import ToyJob, ToyProver, apply  # noqa: E402

pytestmark = pytest.mark.integration

BOND = 10**18
JOB = 1
SIZES = [2100, 1500, 3000, 200, 1025, 2500, 1300]


@pytest.fixture()
def toy_chain(devnet, artifacts):  # noqa: F811 - pytest fixture parameter
    return Chain(devnet.anvil, artifacts, 4)


def corrupt(job: ToyJob, u: int, t: int, pos: int) -> dict[int, list[bytes]]:
    outs = job.run(u)
    b = bytearray(outs[t])
    b[pos] ^= 0x5A
    outs[t] = bytes(b)
    for k in range(t + 1, len(outs)):
        outs[k] = apply(job.descriptors[k], outs[k - 1])
    return {u: outs}


def client_for(chain: Chain, index: int) -> DisputeGameClient:
    return DisputeGameClient.with_account(chain.w3, chain.game.address, dev_account(index))


def open_game(chain: Chain, job: ToyJob, worker_traces) -> tuple:
    honest, worker = job.player(), job.player(worker_traces)
    prog = job.program
    chain.post_job(JOB, worker.result_levels[-1][0], program_root(1, prog.num_ops, 0, prog.ops_root),
                   job.inputs_root, len(job.unit_inputs), BOND)
    gid, _ = client_for(chain, 2).challenge(JOB, BOND)  # accounts[2] is the toy chain's challenger
    return honest, worker, gid


def play_out(chain, gid, parties, limit=200) -> None:
    """parties: side -> (Responder, data, prover); each looks at the game in turn."""
    for _ in range(limit):
        for side, (r, data, prover) in parties.items():
            r.play(gid, side, data, prover)
        if all(r.finished(gid) for r, _, _ in parties.values()):
            return
    raise AssertionError("game did not end")


def txs_of(chain: Chain, address: str) -> int:
    return chain.w3.eth.get_transaction_count(address)


def test_responders_play_a_whole_game_and_the_cheater_loses(toy_chain, tmp_path):
    chain = toy_chain
    job = ToyJob.random("resp", 5, SIZES)
    honest, worker, gid = open_game(chain, job, corrupt(job, 3, 2, 40))
    w_store, c_store = StateStore(tmp_path / "w.sqlite"), StateStore(tmp_path / "c.sqlite")
    wr, cr = Responder(client_for(chain, 1), w_store), Responder(client_for(chain, 2), c_store)
    c_before = txs_of(chain, chain.challenger)
    w_before = txs_of(chain, chain.worker)
    play_out(chain, gid, {Side.WORKER: (wr, worker, None), Side.CHALLENGER: (cr, honest, ToyProver(job))})

    g = client_for(chain, 2).get_game(gid)
    assert g.outcome == Outcome.CHALLENGER_WON and g.phase == Phase.RESOLVED
    assert (g.unit_index, g.op_index) == (3, 2)
    assert client_for(chain, 2).resolutions(gid)[0].reason == Reason.ONE_STEP
    assert chain.market.functions.isSlashed(JOB).call()
    # Every transaction each side sent is one outbox entry, all mined, none failed: no move twice.
    moves = total_moves(5, 6, SIZES[3], 4)
    c_tx, w_tx = txs_of(chain, chain.challenger) - c_before, txs_of(chain, chain.worker) - w_before
    assert c_tx + w_tx == moves + 1  # + the challenger's withdraw
    for store, sent in ((c_store, c_tx), (w_store, w_tx)):
        rows = store._db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        assert dict(rows) == {"mined": sent}
    assert client_for(chain, 2).credits(chain.challenger) == 0  # the bond came back and was withdrawn


def test_honest_worker_beats_a_wrong_challenger_and_withdraws(toy_chain, tmp_path):
    chain = toy_chain
    job = ToyJob.random("resp2", 5, SIZES)
    honest, worker, gid = open_game(chain, job, {})
    wrong = job.player(corrupt(job, 1, 4, 7))
    wr = Responder(client_for(chain, 1), StateStore(tmp_path / "w.sqlite"))
    cr = Responder(client_for(chain, 2), StateStore(tmp_path / "c.sqlite"))
    bal = chain.w3.eth.get_balance(chain.worker)
    play_out(chain, gid, {Side.WORKER: (wr, worker, None), Side.CHALLENGER: (cr, wrong, ToyProver(job))})
    g = client_for(chain, 1).get_game(gid)
    assert g.outcome == Outcome.WORKER_WON
    assert not chain.market.functions.isSlashed(JOB).call()
    assert client_for(chain, 1).credits(chain.worker) == 0
    assert chain.w3.eth.get_balance(chain.worker) > bal  # half the bond arrived, minus gas


class CrashAfterRecord(Exception):
    pass


def test_killed_between_record_and_broadcast_resumes_with_the_same_bytes(toy_chain, tmp_path):
    chain = toy_chain
    job = ToyJob.random("resp3", 5, SIZES)
    honest, worker, gid = open_game(chain, job, corrupt(job, 0, 5, 1299))
    path = tmp_path / "c.sqlite"
    wr = Responder(client_for(chain, 1), StateStore(tmp_path / "w.sqlite"))
    wr.play(gid, Side.WORKER, worker)  # the worker reveals; the challenger is to pick

    # First life: the challenger signs its pick, records it, and "dies" before broadcasting.
    crashing = client_for(chain, 2)
    crashing.sender.broadcast = lambda raw, context="": (_ for _ in ()).throw(CrashAfterRecord())
    store1 = StateStore(path)
    with pytest.raises(CrashAfterRecord):
        Responder(crashing, store1).play(gid, Side.CHALLENGER, honest, ToyProver(job))
    store1.close()
    move_no = client_for(chain, 2).get_game(gid).move_no
    recorded = StateStore(path).outbox_get(f"game:{gid}:move:{move_no}")
    assert recorded is not None and recorded.status == "pending"
    assert client_for(chain, 2).sender.receipt(recorded.tx_hash) is None  # it never left the process

    # Second life, same SQLite file: it re-broadcasts the recorded bytes instead of signing anew.
    store2 = StateStore(path)
    cr = Responder(client_for(chain, 2), store2)
    before = txs_of(chain, chain.challenger)
    assert cr.play(gid, Side.CHALLENGER, honest, ToyProver(job)) is True
    assert txs_of(chain, chain.challenger) == before + 1
    assert store2.outbox_get(f"game:{gid}:move:{move_no}").status == "mined"
    assert client_for(chain, 2).sender.receipt(recorded.tx_hash)["status"] == 1
    play_out(chain, gid, {Side.WORKER: (wr, worker, None), Side.CHALLENGER: (cr, honest, ToyProver(job))})
    assert client_for(chain, 2).get_game(gid).outcome == Outcome.CHALLENGER_WON


def test_silent_worker_loses_on_its_clock(toy_chain, tmp_path):
    chain = toy_chain
    job = ToyJob.random("resp4", 5, SIZES)
    honest, worker, gid = open_game(chain, job, corrupt(job, 2, 1, 3))
    cr = Responder(client_for(chain, 2), StateStore(tmp_path / "c.sqlite"))
    assert cr.play(gid, Side.CHALLENGER, honest, ToyProver(job)) is False  # the worker's turn: wait
    chain.anvil.increase_time(CLOCK + 1)
    assert cr.play(gid, Side.CHALLENGER, honest, ToyProver(job)) is True  # resolveTimeout
    assert client_for(chain, 2).resolutions(gid)[0].reason == Reason.TIMEOUT
    assert client_for(chain, 2).get_game(gid).outcome == Outcome.CHALLENGER_WON
    cr.play(gid, Side.CHALLENGER, honest, ToyProver(job))  # withdraws the bond
    assert cr.finished(gid)
