"""Show 3: `gpumesh worker run` as a real subprocess, SIGKILLed in the middle of a job (after some
units, before the submit), restarted: it resumes at the first unfinished unit, submits exactly
once (one submitResult transaction, one ResultSubmitted event), finalizes and is paid. Then SIGTERM
stops it cleanly. Real anvil, embedded IPFS node, torch."""

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


def test_worker_killed_mid_job_resumes_and_submits_once(env, tmp_path):
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, window=600)
    state = tmp_path / "state"
    db = state / "worker.sqlite"
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"

    def start(log: Path, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "gpumesh.client.cli.main", "--home", str(tmp_path / "home"),
                "--rpc-url", env.anvil.url, "--ipfs-api", env.ipfs.api_multiaddr, "worker", "run",
                "--account", "dev2", "--deployment", str(env.dep_path), "--state", str(state),
                "--interval", "0.1", "--chunk-units", "2", *extra]
        return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

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
        p2.send_signal(signal.SIGTERM)
        rc = p2.wait(30)
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
    w3 = env.w3
    worker = dev_account(2).address
    sent = []
    for n in range(1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["from"] == worker and bytes(tx["input"])[:4] == sel:
                sent.append(tx["hash"])
    assert len(sent) == 1
    assert market.get_job(job_id).result_root == bytes(submits[0]["args"]["resultRoot"])
    assert list(ev.JobFinalized().get_logs(argument_filters={"jobId": job_id}, from_block=0))

