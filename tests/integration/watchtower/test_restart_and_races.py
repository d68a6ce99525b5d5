"""A watchtower killed mid-dispute resumes from its SQLite state and wins without sending any move
twice (in-process: killed between recording a signed move and broadcasting it; and the real
`gpumesh watchtower run` process SIGKILLed mid-game and started again); two watchtowers
challenging the same wrong result at once: the worker is slashed once, the other game is closed
with its bond refunded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gpumesh.client.core.game import Outcome
from gpumesh.node.common.store import StateStore
from gpumesh.node.watchtower.tower import status_of
from tests.integration.nodes.conftest import Corruption, post_digits_job, submit_as_worker
from tests.integration.watchtower.helpers import DefendingWorker, make_tower, run

pytestmark = pytest.mark.integration

CHEAT = Corruption(unit=1, op=4, element=57773, delta=127)


def challenger_txs_expected(game, gid: int) -> int:
    """Transactions an exactly-once challenger sends in a won game: challenge, one pick per
    ChildPicked, proveOp, step, and the two withdrawals (game bond, registry slash reward)."""
    return 1 + len(game._logs("ChildPicked", gameId=gid)) + 1 + 1 + 2


def nonce(dn, role: str) -> int:
    return dn.w3().eth.get_transaction_count(dn.address(role))


def outbox_statuses(path) -> dict[str, int]:
    s = StateStore(path)
    try:
        return dict(s._db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    finally:
        s.close()


class Crash(BaseException):  # a kill: no error boundary may swallow it
    pass


def test_killed_between_record_and_broadcast_resumes_and_wins(devnet, tmp_path):
    job = post_digits_job(devnet, num_units=4)
    sub = submit_as_worker(devnet, job, corruptions=(CHEAT,))
    worker = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite")
    path = tmp_path / "wt.sqlite"
    before = nonce(devnet, "watchtower")

    first = make_tower(devnet, path)
    while not devnet.game().games_of_job(job.job_id) or devnet.game().get_game(1).move_no < 4:
        first.tick()
        worker()
    # The next challenger move is signed and recorded, then the process "dies" before sending it.
    first.game.sender.broadcast = lambda raw, context="": (_ for _ in ()).throw(Crash())
    with pytest.raises(Crash):
        for _ in range(5):
            first.tick()
            worker()
    first.state.close()
    pending = StateStore(path).outbox_pending()
    assert len(pending) == 1 and pending[0].intent.startswith("game:")

    second = make_tower(devnet, path)  # a new life on the same SQLite file
    run(second, worker)
    (gid,) = devnet.game().games_of_job(job.job_id)
    assert devnet.game().get_game(gid).outcome == Outcome.CHALLENGER_WON
    assert devnet.game().w3.eth.get_transaction_receipt(pending[0].tx_hash)["status"] == 1  # the recorded bytes were mined
    assert nonce(devnet, "watchtower") - before == challenger_txs_expected(devnet.game(), gid)
    assert outbox_statuses(path) == {"mined": challenger_txs_expected(devnet.game(), gid)}
    st = status_of(second.state)
    assert st["transactions"] == challenger_txs_expected(devnet.game(), gid)
    w3 = devnet.w3()
    assert st["gas_used"] == sum(w3.eth.get_transaction_receipt(t["tx"])["gasUsed"]
                                 for t in second.state.all("tx").values())


def _start(devnet, tmp_path, state, log, once: bool = True):
    env = dict(os.environ, GPUMESH_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    env.pop("GPUMESH_CONFIG", None)
    cmd = [sys.executable, "-m", "gpumesh.client.cli.main", "--ipfs-api", devnet.ipfs_api, "watchtower", "run",
           "--account", "dev3", "--rpc-url", devnet.rpc_url, "--deployment", str(devnet.deployment_path),
           "--state", str(state), "--interval", "0.1", *(["--once"] if once else [])]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def test_watchtower_process_sigkilled_mid_game_restarts_and_wins(devnet, tmp_path):
    assert devnet.address("watchtower") == devnet.address("dev3")
    job = post_digits_job(devnet, num_units=4)
    sub = submit_as_worker(devnet, job, corruptions=(CHEAT,))
    worker = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite")
    state = tmp_path / "wt-state"
    before = nonce(devnet, "watchtower")
    logf = open(tmp_path / "wt.log", "wb")  # noqa: SIM115 - closed below
    proc = _start(devnet, tmp_path, state, logf)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            worker()
            games = devnet.game().games_of_job(job.job_id)
            if games and devnet.game().get_game(games[0]).move_no >= 5:
                break
            assert proc.poll() is None, (tmp_path / "wt.log").read_text()
            time.sleep(0.1)
        else:
            raise AssertionError("the game did not get going: " + (tmp_path / "wt.log").read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        (gid,) = devnet.game().games_of_job(job.job_id)
        assert devnet.game().get_game(gid).phase.name != "RESOLVED"
        worker()
        proc = _start(devnet, tmp_path, state, logf)
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline:
            worker()
            time.sleep(0.1)
        assert proc.poll() == 0, (tmp_path / "wt.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        logf.close()
    assert devnet.game().get_game(gid).outcome == Outcome.CHALLENGER_WON
    assert devnet.market().is_slashed(job.job_id)
    assert nonce(devnet, "watchtower") - before == challenger_txs_expected(devnet.game(), gid)
    out = subprocess.run([sys.executable, "-m", "gpumesh.client.cli.main", "watchtower", "status", "--state",
                          str(state), "--json"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, GPUMESH_HOME=str(tmp_path / "home")))
    import json

    st = json.loads(out.stdout)
    assert st["jobs"][str(job.job_id)]["status"] == "won"
    assert st["games"][str(gid)] == {**st["games"][str(gid)], "status": "won", "reason": "one_step"}
    assert "checked 4/4 units: MISMATCH unit 1" in (tmp_path / "wt.log").read_text()


def test_two_watchtowers_challenge_the_same_wrong_result(devnet, tmp_path):
    job = post_digits_job(devnet, num_units=4)
    sub = submit_as_worker(devnet, job, corruptions=(CHEAT,))
    worker = DefendingWorker(devnet, sub, tmp_path / "worker.sqlite")
    a = make_tower(devnet, tmp_path / "a.sqlite", role="watchtower")
    b = make_tower(devnet, tmp_path / "b.sqlite", role="watchtower2")
    w3 = devnet.w3()
    bal_b = w3.eth.get_balance(devnet.address("watchtower2"))
    stake_before = devnet.registry().info(devnet.address("worker")).total
    a.tick()
    b.tick()  # both checked and both challenged, before any game moved
    games = devnet.game().games_of_job(job.job_id)
    assert len(games) == 2
    run(a, b.tick, worker)
    run(b, worker)
    # Both games play to their end (docs/protocol.md 4.11); the earliest one is paid the slash.
    outcomes = [devnet.game().get_game(g).outcome for g in games]
    assert outcomes == [Outcome.CHALLENGER_WON, Outcome.CHALLENGER_WON]
    slashed = devnet.market().contract.events.JobSlashed().get_logs(
        argument_filters={"jobId": job.job_id}, from_block=0)
    assert len(slashed) == 1  # slashed once
    assert devnet.registry().info(devnet.address("worker")).total == stake_before - job.stake
    first = devnet.game().get_game(min(games)).challenger
    assert devnet.market().get_job(job.job_id).first_winner == first
    for g in games:
        assert devnet.game().credits(devnet.game().get_game(g).challenger) == 0  # both bonds collected
    assert w3.eth.get_balance(devnet.address("watchtower2")) > bal_b - 10**16  # b got its bond back
    assert {a.state.get("job", job.job_id)["status"], b.state.get("job", job.job_id)["status"]} == {"won"}


def test_sigterm_stops_the_watchtower_cleanly(devnet, tmp_path):
    logf = open(tmp_path / "wt.log", "wb")  # noqa: SIM115 - closed below
    proc = _start(devnet, tmp_path, tmp_path / "state", logf, once=False)
    try:
        deadline = time.time() + 60
        while b" on chain 31337 " not in (tmp_path / "wt.log").read_bytes():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "wt.log").read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # a few ticks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        logf.close()
    text = (tmp_path / "wt.log").read_text()
    assert text.rstrip().endswith("watchtower stopped") and "Traceback" not in text
