"""The watchtower on a real anvil with the real DisputeGame + Int8Verifier, the embedded IPFS node and
torch: it checks an honest job and leaves it alone; it catches a worker that corrupted one element
(first op, a middle op, the last element of a tensor), wins the game with the real one-step verifier
and collects; a worker that stops answering loses on its clock, and so does a watchtower that stops.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gpumesh.client.core import merkle
from gpumesh.client.core.game import Outcome, Reason, Side, bond_burn, slash_paid
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.responder import Responder
from gpumesh.node.watchtower.tower import status_of
from tests.integration.nodes.conftest import Corruption, cheat_trace, post_digits_job, submit_as_worker
from tests.integration.watchtower.helpers import DefendingWorker, make_tower, run

pytestmark = pytest.mark.integration


def assert_output_changed(sub, c: Corruption) -> None:
    """Precondition: the corruption reaches the unit's output (else the result is honest)."""
    from gpumesh.node.runtime.executor import Executor

    honest = np.ascontiguousarray(Executor(sub.bundle).run_unit(sub.job.units[c.unit])).tobytes()
    assert merkle.tensor_root(honest) != sub.unit_roots[c.unit]


def test_honest_job_is_checked_and_left_alone(devnet, tmp_path, caplog):
    job = post_digits_job(devnet, num_units=4)
    submit_as_worker(devnet, job)
    tower = make_tower(devnet, tmp_path / "wt.sqlite")
    with caplog.at_level(logging.INFO, logger="gpumesh.watchtower"):
        run(tower)
    rec = tower.state.get("job", job.job_id)
    assert rec["status"] == "ok" and rec["check"]["checked"] == [0, 1, 2, 3]
    assert f"job {job.job_id}: checked 4/4 units: OK" in caplog.text
    assert devnet.game().games_of_job(job.job_id) == []


@pytest.mark.parametrize("c", [
    Corruption(unit=0, op=0, element=420, delta=100),  # the first op (reads the unit input)
    Corruption(unit=1, op=4, element=57773, delta=127),  # a middle op (conv2: linear, per-channel)
    Corruption(unit=3, op=11, element=31, delta=1),  # the last element of the output tensor
], ids=["first-op", "middle-op", "last-element"])
def test_cheating_worker_is_challenged_and_slashed(devnet, tmp_path, caplog, c):
    job = post_digits_job(devnet, num_units=4)
    sub = submit_as_worker(devnet, job, corruptions=(c,))
    assert_output_changed(sub, c)
    me = devnet.address("watchtower")
    balance = devnet.w3().eth.get_balance(me)
    tower = make_tower(devnet, tmp_path / "wt.sqlite", metrics=True)
    with caplog.at_level(logging.INFO, logger="gpumesh.watchtower"):
        run(tower, DefendingWorker(devnet, sub, tmp_path / "worker.sqlite"))

    (gid,) = devnet.game().games_of_job(job.job_id)
    g = devnet.game().get_game(gid)
    assert g.outcome == Outcome.CHALLENGER_WON
    assert devnet.game().resolutions(gid)[0].reason == Reason.ONE_STEP
    assert (g.unit_index, g.op_index) == (c.unit, c.op), "the corrupted unit and its FIRST wrong op"
    assert devnet.market().is_slashed(job.job_id)
    assert f"checked 4/4 units: MISMATCH unit {c.unit} -> game {gid}" in caplog.text
    st = status_of(tower.state)
    assert st["jobs"][job.job_id]["status"] == "won" and st["games"][gid]["reason"] == "one_step"
    # Collected: the bond back from the game, half the slashed stake from the registry (4.11).
    assert devnet.game().credits(me) == 0 and devnet.registry().info(me).credits == 0
    reward = slash_paid(job.stake)
    gained = devnet.w3().eth.get_balance(me) - balance
    assert reward - 10**16 < gained < reward  # minus the gas of ~15 transactions
    assert "gpumesh_watchtower_games_resolved_total{outcome=\"won\"} 1.0" in tower.metrics.text()


def test_worker_that_stops_answering_loses_on_its_clock(devnet, tmp_path):
    job = post_digits_job(devnet, num_units=2)
    c = Corruption(unit=1, op=11, element=0, delta=3)
    sub = submit_as_worker(devnet, job, corruptions=(c,))
    tower = make_tower(devnet, tmp_path / "wt.sqlite")
    silent = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite", silent=True)
    ticks = {"n": 0}

    def wait_out_the_clock():
        ticks["n"] += 1
        if ticks["n"] == 3:  # the game is open and the worker owes its first move
            devnet.anvil.increase_time(devnet.game().clock_seconds() + 1)

    run(tower, silent, wait_out_the_clock)
    (gid,) = devnet.game().games_of_job(job.job_id)
    assert devnet.game().get_game(gid).outcome == Outcome.CHALLENGER_WON
    assert devnet.game().resolutions(gid)[0].reason == Reason.TIMEOUT
    assert devnet.market().is_slashed(job.job_id)


def test_watchtower_that_stops_answering_loses_on_its_clock(devnet, tmp_path):
    job = post_digits_job(devnet, num_units=2)
    sub = submit_as_worker(devnet, job, corruptions=(Corruption(unit=0, op=11, element=5, delta=2),))
    tower = make_tower(devnet, tmp_path / "wt.sqlite")
    while not devnet.game().games_of_job(job.job_id):
        tower.tick()  # checks and challenges, then "dies"
    (gid,) = devnet.game().games_of_job(job.job_id)
    worker = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite")
    worker()  # the worker reveals; now the challenger owes a move and never makes it
    assert devnet.game().get_game(gid).turn == Side.CHALLENGER
    devnet.anvil.increase_time(devnet.game().clock_seconds() + 1)
    worker()  # resolveTimeout
    worker()  # and withdraws what it won
    g = devnet.game().get_game(gid)
    assert g.outcome == Outcome.WORKER_WON and devnet.game().resolutions(gid)[0].reason == Reason.TIMEOUT
    assert not devnet.market().is_slashed(job.job_id)
    assert devnet.game().burned() == bond_burn(job.bond)
    assert worker.responder.finished(gid)


def test_lying_challenger_loses_its_bond(devnet, tmp_path):
    """A challenger that disputes a CORRECT result (it plays a wrong belief about unit 1, op 4)
    reaches the one-step and the Int8Verifier sides with the worker."""
    from gpumesh.node.dispute.play import int8_prover, player_data, spliced_roots
    from gpumesh.node.dispute.strategy import UnitTrace

    job = post_digits_job(devnet, num_units=3)
    sub = submit_as_worker(devnet, job)  # honest
    wrong = Corruption(unit=1, op=4, element=57773, delta=127)
    lie = cheat_trace(sub.bundle, job.units[1], wrong)
    honest = sub.player_data()
    believed = player_data(sub.bundle, spliced_roots(sub.unit_roots, {1: merkle.tensor_root(lie[-1])}),
                           lambda u: UnitTrace(lie) if u == 1 else honest.trace(u))
    game = devnet.game("watchtower2")
    gid, _ = game.challenge(job.job_id, job.bond)
    liar = Responder(game, StateStore(tmp_path / "liar.sqlite"))
    worker = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite")
    worker_before = devnet.w3().eth.get_balance(devnet.address("worker"))
    for _ in range(200):
        worker()
        liar.play(gid, Side.CHALLENGER, believed, int8_prover(sub.bundle, job.units))
        if worker.responder.finished(gid):
            break
    g = game.get_game(gid)
    assert g.outcome == Outcome.WORKER_WON and game.resolutions(gid)[0].reason == Reason.ONE_STEP
    assert (g.unit_index, g.op_index) == (1, 4)
    assert not devnet.market().is_slashed(job.job_id)
    burn = bond_burn(job.bond)
    assert game.burned() == burn and game.credits(devnet.address("worker")) == 0
    assert devnet.w3().eth.get_balance(devnet.address("worker")) > worker_before + (job.bond - burn) - 10**16


def test_the_sample_is_drawn_once_and_a_restart_checks_the_same_units(devnet, tmp_path):
    from gpumesh.node.watchtower.checker import sample_units

    job = post_digits_job(devnet, num_units=4)
    submit_as_worker(devnet, job)
    first = make_tower(devnet, tmp_path / "wt.sqlite", rate=0.5)

    def die(*_):
        raise KeyboardInterrupt("killed mid-check")

    first._run_check = die
    with pytest.raises(KeyboardInterrupt):
        first.tick()
    seed = first.state.get("job", job.job_id)["seed"]
    first.state.close()
    second = make_tower(devnet, tmp_path / "wt.sqlite", rate=0.5, metrics=True)
    server = second.metrics.serve(0)
    try:
        run(second)
        rec = second.state.get("job", job.job_id)
        assert rec["seed"] == seed and rec["status"] == "ok"
        assert tuple(rec["check"]["checked"]) == sample_units(4, 0.5, seed) and len(rec["check"]["checked"]) == 2
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics").read().decode()  # noqa: S310
        assert "gpumesh_watchtower_units_checked_total 2.0" in body
        assert 'gpumesh_watchtower_jobs_checked_total{result="ok"} 1.0' in body
    finally:
        server.shutdown()


def test_outputs_that_do_not_match_the_result_root_mean_a_full_rerun(devnet, tmp_path, caplog):
    """The worker commits a corrupt result but publishes the honest outputs file: the file does not
    hash to the on-chain result root, so the sampling watchtower re-executes every unit, finds that
    its result root differs, and the game (which needs no per-unit hint) still finds unit 3."""
    job = post_digits_job(devnet, num_units=4)
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program

    clean = Executor(load_program(job.program_dir)).run(job.units).outputs
    c = Corruption(unit=3, op=11, element=31, delta=1)
    sub = submit_as_worker(devnet, job, corruptions=(c,), publish=clean)
    tower = make_tower(devnet, tmp_path / "wt.sqlite", rate=0.25)
    with caplog.at_level(logging.INFO, logger="gpumesh.watchtower"):
        run(tower, DefendingWorker(devnet, sub, tmp_path / "worker.sqlite"))
    (gid,) = devnet.game().games_of_job(job.job_id)
    assert "checked 4/4 units (outputs unusable: outputs hash to result root" in caplog.text
    assert f"MISMATCH result root -> game {gid}" in caplog.text
    g = devnet.game().get_game(gid)
    assert g.outcome == Outcome.CHALLENGER_WON and (g.unit_index, g.op_index) == (3, 11)


def test_outputs_missing_from_ipfs_are_retried_then_everything_is_rerun(devnet, tmp_path, caplog):
    """The worker submits a wrong result naming an outputs CID that no IPFS node has: the watchtower
    retries the fetch (the content may still appear), then re-executes every unit and challenges."""
    import os

    from gpumesh.ipfs.store import MemoryStore

    nowhere = MemoryStore().add_bytes(os.urandom(64))  # a valid CID of bytes nobody ever added
    job = post_digits_job(devnet, num_units=2)
    sub = submit_as_worker(devnet, job, corruptions=(Corruption(unit=0, op=11, element=3, delta=2),),
                           outputs_cid=nowhere)
    tower = make_tower(devnet, tmp_path / "wt.sqlite", rate=0.5)
    with caplog.at_level(logging.INFO, logger="gpumesh.watchtower"):
        run(tower, DefendingWorker(devnet, sub, tmp_path / "worker.sqlite"))
    rec = tower.state.get("job", job.job_id)
    assert rec["attempts"] == 3 and rec["status"] == "won"
    assert f"job {job.job_id}: cannot check yet (attempt 1)" in caplog.text
    assert f"job {job.job_id}: checked 2/2 units (outputs unusable: job {job.job_id}: outputs {nowhere}" in caplog.text
    assert devnet.market().is_slashed(job.job_id)


def test_withheld_outputs_data_request_unanswered_slashes(devnet, tmp_path, caplog):
    """A RIGHT result whose outputs nobody serves: with --request-data the watchtower re-executes
    everything (the root matches), then requires one unit on-chain; the worker stays silent, its
    clock runs out, it is slashed, and the watchtower is paid half its stake."""
    import os

    from gpumesh.client.core.game import slash_paid
    from gpumesh.ipfs.store import MemoryStore

    nowhere = MemoryStore().add_bytes(os.urandom(64))
    job = post_digits_job(devnet, num_units=2)
    submit_as_worker(devnet, job, outputs_cid=nowhere)
    tower = make_tower(devnet, tmp_path / "wt.sqlite", request_data=True)
    me = devnet.address("watchtower")
    paid_before = devnet.registry().info(me).credits
    wallet_before = devnet.w3().eth.get_balance(me)
    with caplog.at_level(logging.INFO, logger="gpumesh.watchtower"):
        for _ in range(50):
            tower.tick()
            if tower.state.get("job", job.job_id)["status"] == "data-requested":
                break
        gid = tower.state.get("job", job.job_id)["game_id"]
        assert f"job {job.job_id}: outputs withheld: data request for unit" in caplog.text
        devnet.anvil.increase_time(devnet.game().clock_seconds() + 1)
        run(tower)
    g = devnet.game().get_game(gid)
    assert g.outcome == Outcome.CHALLENGER_WON
    assert devnet.market().is_slashed(job.job_id)
    assert tower.state.get("game", gid)["status"] == "won"
    gained = devnet.w3().eth.get_balance(me) - wallet_before + devnet.registry().info(me).credits - paid_before
    assert gained > slash_paid(job.stake) - 10**16  # half the stake, less the gas of 3 transactions
