"""Show 1: an honest job end to end on a real anvil, the embedded IPFS node and torch: the poster
publishes the digits MLP + 17 units, the worker daemon validates, claims, executes, uploads,
submits, finalizes after the window and withdraws; the poster downloads the outputs and verifies
them against the ON-CHAIN result root, with predictions checked against the labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core import merkle
from gpumesh.client.services.accounts import dev_account
from gpumesh.node.jobs.outputs import verify_outputs

pytestmark = pytest.mark.integration
LABELS = Path(__file__).resolve().parents[3] / "examples/digits/data/test_labels.json"
ETH = 10**18


def test_honest_job_is_paid_and_outputs_verify(env, caplog):
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(2).stake(2 * ETH)
    job_id, pub = env.post(reward=ETH // 2, stake=ETH, window=600)
    market = env.market()
    w = env.worker(chunk_units=4)
    worker = dev_account(2).address
    bal0 = env.w3.eth.get_balance(worker)

    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    job = market.get_job(job_id)
    assert job.worker == worker
    rec = w.node.state.get("job", job_id)

    # The poster's side: fetch the outputs by the CID in the event, verify against the chain.
    outputs = verify_outputs(env.store().cat(rec["outputs_cid"]), pub.bundle.program, job.result_root, 17)
    # Independent check: the result root from a plain per-unit run of the executor, and the
    # predictions against the held-out labels (the MLP is ~97% accurate on them).
    from gpumesh.node.runtime.executor import Executor

    ex = Executor(pub.bundle)
    roots = [merkle.tensor_root(np.ascontiguousarray(ex.run_unit(u)).tobytes()) for u in pub.units]
    assert merkle.roots_root(roots) == job.result_root
    truth = json.loads(LABELS.read_text())
    preds = outputs.reshape(-1)[: len(truth)]
    acc = float(np.mean(preds == np.array(truth)))
    assert acc > 0.9, acc

    # Nothing is final before the window closes; after it, the worker finalizes and withdraws.
    for _ in range(3):
        assert w.daemon.tick_once()
    assert market.get_job(job_id).state == JobState.SUBMITTED
    env.anvil.increase_time(601)
    env.drive(w, lambda: w.node.state.get("job", job_id)["status"] == "done")
    assert market.get_job(job_id).state == JobState.FINALIZED
    assert market.credits(worker) == 0
    bal1 = env.w3.eth.get_balance(worker)
    assert bal1 - bal0 > ETH // 2 - ETH // 100  # the reward, less gas
    log = caplog.text
    assert "validated" in log and "claimed" in log and "submitted" in log and "withdrew" in log
