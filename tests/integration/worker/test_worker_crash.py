"""Show 3: `gpumesh worker run` as a real subprocess, SIGKILLed and restarted on the same state folder.
- Mid-job (after some units, before the submit): it resumes at the first unfinished unit, submits
  exactly once (one submitResult transaction, one ResultSubmitted event), finalizes and is paid.
- Mid-dispute (an honest result challenged by a lying challenger; killed after its first move,
  before the game ends): it resumes the game, wins at the one-step, withdraws the challenger's bond
  less the burned half, is paid after the window, and never sends a move twice.
Then SIGTERM stops it cleanly. Real anvil, embedded IPFS node, torch."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_utils import function_signature_to_4byte_selector

from gpumesh.client.chain.types import JobState
from gpumesh.client.services.accounts import dev_account

pytestmark = pytest.mark.integration
ETH = 10**18


def _units_done(db: Path, job_id: int) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        try:
            return c.execute("SELECT count(*) FROM records WHERE kind=?", (f"out:{job_id}",)).fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def _wait(pred, timeout: float, proc=None, what: str = "") -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}) waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _starter(env, tmp_path: Path, state: Path):
    """Starts `gpumesh worker run --account dev2` on `state`, its output going to a log file."""

    def start(log: Path, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "gpumesh.client.cli.main", "--home", str(tmp_path / "home"),
                "--rpc-url", env.anvil.url, "--ipfs-api", env.ipfs.api_multiaddr, "worker", "run",
                "--account", "dev2", "--deployment", str(env.dep_path), "--state", str(state),
                "--interval", "0.1", "--chunk-units", "2", *extra]
        return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

    return start


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM and wait: the exit status (a clean stop is 0, with 'worker stopped' in the log)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def _txs(w3, sender: str, to: str | None = None, first_block: int = 1) -> list:
    """Every mined transaction from `sender` (to `to`), with its receipt status, in block order."""
    out = []
    for n in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["from"] == sender and (to is None or tx["to"] == to):
                out.append((tx, w3.eth.get_transaction_receipt(tx["hash"])["status"]))
    return out


def test_worker_killed_mid_job_resumes_and_submits_once(env, tmp_path):
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, window=600)
    state = tmp_path / "state"
    db = state / "worker.sqlite"
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"
    start = _starter(env, tmp_path, state)

    p1 = start(log1, "--unit-delay", "0.25")
    try:
        _wait(lambda: _units_done(db, job_id) >= 4, 90, p1, "4 units")
    finally:
        p1.send_signal(signal.SIGKILL)
        p1.wait(10)
    killed_at = _units_done(db, job_id)
    market = env.market()
    assert 4 <= killed_at < 17, killed_at
    assert market.get_job(job_id).state == JobState.CLAIMED

    p2 = start(log2)
    try:
        _wait(lambda: market.get_job(job_id).state == JobState.SUBMITTED, 90, p2, "the submit")
        env.anvil.increase_time(601)
        _wait(lambda: market.get_job(job_id).state == JobState.FINALIZED and market.credits(dev_account(2).address) == 0,
              60, p2, "finalize + withdraw")
    finally:
        rc = _stop(p2)
    out2 = log2.read_text()
    assert rc == 0 and "worker stopped" in out2, out2[-2000:]
    assert f"job {job_id}: resuming at unit" in out2 and f"({killed_at} unit(s) already stored)" in out2, out2[-3000:]

    ev = market.contract.events
    submits = list(ev.ResultSubmitted().get_logs(argument_filters={"jobId": job_id}, from_block=0))
    claims = list(ev.JobClaimed().get_logs(argument_filters={"jobId": job_id}, from_block=0))
    assert len(submits) == 1 and len(claims) == 1
    # exactly one submitResult transaction was ever mined from the worker, for any job
    # (selector from the Solidity signature, independently of the ABI the worker uses)
    sel = function_signature_to_4byte_selector("submitResult(uint256,bytes32,string)")
    sent = [tx for tx, _ in _txs(env.w3, dev_account(2).address) if bytes(tx["input"])[:4] == sel]
    assert len(sent) == 1
    assert market.get_job(job_id).result_root == bytes(submits[0]["args"]["resultRoot"])
    assert list(ev.JobFinalized().get_logs(argument_filters={"jobId": job_id}, from_block=0))



#: DisputeGame entry points that are moves of a game (each carries its move number).
MOVES = ("reveal", "pick", "commitTrace", "proveOp", "revealLeaf", "step")


def _lying_challenger(env, job):
    """A challenger whose own trace of unit 1 is wrong (its argmax output element 0 off by one: a
    bug on its side), disputing the honest worker's correct result: (game client, Responder, its
    PlayerData, its StepProver)."""
    from gpumesh.client.core import merkle
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.dispute.play import int8_prover, player_data, spliced_roots
    from gpumesh.node.dispute.responder import Responder
    from gpumesh.node.dispute.strategy import UnitTrace
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program
    from tests.integration.nodes.conftest import Corruption, cheat_trace

    bundle = load_program(job.program_dir)
    ex = Executor(bundle)
    honest = [list(ex.trace(u).outputs) for u in job.units]
    last = len(bundle.program.ops) - 1
    lie = cheat_trace(bundle, job.units[1], Corruption(unit=1, op=last, element=0, delta=1))
    assert lie[-1] != honest[1][-1]
    traces = {u: UnitTrace(lie if u == 1 else honest[u]) for u in range(len(job.units))}
    roots = spliced_roots([merkle.tensor_root(t[-1]) for t in honest], {1: merkle.tensor_root(lie[-1])})
    believed = player_data(bundle, roots, traces.__getitem__)
    game = env.dn.game("watchtower2")
    liar = Responder(game, StateStore(env.tmp / "liar.sqlite"))
    return game, liar, believed, int8_prover(bundle, job.units)


def test_worker_killed_mid_dispute_resumes_and_wins(env, tmp_path):
    from gpumesh.client.core.game import SPLIT_BITS, Outcome, Reason, Side, bond_burn, total_moves
    from tests.integration.nodes.conftest import post_digits_job

    worker = dev_account(2).address
    env.registry(2).stake(2 * ETH)
    job = post_digits_job(env.dn, model="mlp", num_units=3, reward=ETH // 2, stake=ETH, bond=ETH // 2,
                          challenge_window=600)
    state = tmp_path / "state"
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"
    start = _starter(env, tmp_path, state)
    market, w3 = env.market(), env.w3

    p1 = start(log1)
    try:
        _wait(lambda: market.get_job(job.job_id).state == JobState.SUBMITTED, 60, p1, "the submit")
        game, liar, believed, prover = _lying_challenger(env, job)
        # read before the challenge: every later worker tx is a game tx (read after it, a worker that
        # answered the challenge before this read had its move counted as already sent, and the wait
        # below never saw it move)
        submitted_nonce = w3.eth.get_transaction_count(worker)
        gid, opened = game.challenge(job.job_id, job.bond)

        stopped = False

        def worker_moved_and_owes_the_next() -> bool:
            # Once the worker has moved and the turn is the challenger's, the worker is frozen
            # (SIGSTOP) before the challenger answers, so it owes the next move when it is killed: a
            # worker left running answered within milliseconds and could play the whole game out
            # between two polls (seen on a quiet machine).
            nonlocal stopped
            if not stopped and w3.eth.get_transaction_count(worker) > submitted_nonce \
                    and game.get_game(gid).turn == Side.CHALLENGER:
                p1.send_signal(signal.SIGSTOP)
                stopped = True
            if not stopped:
                return False
            liar.play(gid, Side.CHALLENGER, believed, prover)  # only acts on its own turn
            return game.get_game(gid).turn == Side.WORKER

        _wait(worker_moved_and_owes_the_next, 60, p1, "the worker's first move and the challenger's answer")
    finally:
        p1.send_signal(signal.SIGKILL)  # mid-dispute: the worker owes a move
        p1.wait(10)
    killed_block = w3.eth.block_number
    assert game.get_game(gid).phase.name != "RESOLVED"

    p2 = start(log2)
    try:
        def game_over_and_collected() -> bool:
            liar.play(gid, Side.CHALLENGER, believed, prover)
            return game.get_game(gid).resolved and game.credits(worker) == 0

        _wait(game_over_and_collected, 60, p2, "the end of the game and the worker's withdrawal")
        env.anvil.increase_time(max(market.get_job(job.job_id).deadline - env.now(), 0) + 1)
        _wait(lambda: market.get_job(job.job_id).state == JobState.FINALIZED and market.credits(worker) == 0,
              30, p2, "finalize + withdraw")
    finally:
        rc = _stop(p2)
    out2 = log2.read_text()
    assert rc == 0 and "worker stopped" in out2, out2[-2000:]
    assert f"game {gid}: moved" in out2, out2[-3000:]  # the restarted worker played on

    # The game: won by the worker at the one-step; half the challenger's bond burned, the rest
    # withdrawn by the worker (IDisputeGame: BOND_BURN_BPS of a losing challenger's bond burns).
    g = game.get_game(gid)
    assert g.outcome == Outcome.WORKER_WON and game.resolutions(gid)[-1].reason == Reason.ONE_STEP
    assert g.unit_index == 1 and not market.is_slashed(job.job_id)
    burn = bond_burn(job.bond)
    assert game.burned() == burn
    paid = [e["args"]["amount"] for e in game.contract.events.Withdrawn().get_logs(
        from_block=opened.block_number, argument_filters={"account": worker})]
    assert paid == [job.bond - burn]
    # Then paid for the job after the challenge window.
    rewards = [e["args"]["amount"] for e in market.contract.events.Withdrawn().get_logs(
        from_block=opened.block_number, argument_filters={"account": worker})]
    assert rewards == [job.reward]

    # No move twice: every worker transaction to the game mined, one per move number, before and
    # after the kill, and both sides' moves add up to a whole game played to the one-step.
    def moves_of(sender: str) -> list[tuple[int, int]]:
        out = []
        for tx, status in _txs(w3, sender, game.address, opened.block_number):
            assert status == 1, f"a reverted game transaction from {sender}"
            fn, args = game.contract.decode_function_input(tx["input"])
            if fn.fn_name in MOVES:
                out.append((int(args["moveNo"]), tx["blockNumber"]))
        return out

    mine, theirs = moves_of(worker), moves_of(env.dn.address("watchtower2"))
    numbers = [m for m, _ in mine]
    assert len(numbers) == len(set(numbers)), f"a move number sent twice: {numbers}"
    assert any(b <= killed_block for _, b in mine) and any(b > killed_block for _, b in mine)
    assert len(mine) + len(theirs) == total_moves(g.num_units, g.num_ops, g.out_bytes, SPLIT_BITS)
    withdrawals = [tx for tx, _ in _txs(w3, worker, game.address, opened.block_number)
                   if game.contract.decode_function_input(tx["input"])[0].fn_name == "withdraw"]
    assert len(withdrawals) == 1
    # Every transaction the worker recorded is settled (mined), its game moves one entry each.
    with sqlite3.connect(f"file:{state / 'worker.sqlite'}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT intent, status FROM outbox").fetchall()
    assert rows and all(st == "mined" for _, st in rows), rows
    assert sorted(i for i, _ in rows if i.startswith(f"game:{gid}:move:")) == sorted(
        f"game:{gid}:move:{m}" for m in numbers)
