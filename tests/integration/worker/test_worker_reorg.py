"""Reorgs on anvil (anvil_reorg, issue #15): a reorg removes the blocks holding the worker's claim
and submit. The worker notices from the chain's state (the job is Open again and not its own),
claims and submits again, and ends with the job Submitted, the same result root, one claim in its
counters per claim that stuck, and nothing lost."""

from __future__ import annotations

import logging

import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.services.accounts import dev_account
from tests.chain_node import CHAIN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHAIN != "anvil", reason="anvil_reorg is anvil's (Hardhat's node has no reorg method)"),
]
ETH = 10**18


def _reorg(env, depth: int) -> None:
    """Replace the last `depth` blocks by empty ones (their transactions are gone from the chain)."""
    env.anvil.rpc("anvil_reorg", [depth, []])


def test_reorg_removing_claim_and_submit_is_redone(env, caplog):
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, window=600)
    market = env.market()
    posted_at = env.w3.eth.block_number
    w = env.worker()
    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    root = market.get_job(job_id).result_root
    head = env.w3.eth.block_number
    assert head > posted_at

    _reorg(env, head - posted_at)  # the claim and the submit are gone; the post stays
    job = market.get_job(job_id)
    assert job.state == JobState.OPEN and env.w3.eth.block_number == head

    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    job = market.get_job(job_id)
    assert job.worker == dev_account(2).address and job.result_root == root
    # the same signed claim and submit went out again (no second signature for one intent)
    assert "a chain reorg replaced recent blocks; 3 transaction(s) of this worker sent again" in caplog.text
    assert f"claim:job:{job_id}: its block was removed by a reorg; sent again" in caplog.text
    assert f"submit:job:{job_id}: its block was removed by a reorg; sent again" in caplog.text
    assert w.node.state.outbox_get(f"claim:job:{job_id}#1") is None
    # and it goes on to the end as if nothing happened
    env.anvil.increase_time(601)
    env.drive(w, lambda: w.node.state.get("job", job_id)["status"] == "done")
    assert market.get_job(job_id).state == JobState.FINALIZED
