"""Data-availability requests (issue #12, attack 5: withheld outputs) on anvil with the real worker
daemon, the real DisputeGame and the embedded IPFS node:
- the poster requests unit 3's output on-chain; the worker daemon answers by itself (answerData),
  the bytes served are the unit's committed output, and the poster's `fetch_result` falls back to
  them when IPFS does not serve the outputs file;
- a worker that does not answer is slashed once its clock runs out, like a lost game."""

from __future__ import annotations

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core import merkle
from gpumesh.client.core.game import DATA_FEE_BPS, Outcome, Phase, Reason, bps_up, slash_paid

pytestmark = pytest.mark.integration
ETH = 10**18


def _requester(env):
    return env.dn.game("poster", env.dn.w3())


def _submitted(env):
    """An honest digits job, claimed, executed and submitted by the worker daemon."""
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, bond=ETH // 10, window=3600)
    worker = env.worker()
    market = env.market()
    env.drive(worker, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    return job_id, worker, market


def test_data_request_is_answered_by_the_worker_daemon(env):
    job_id, worker, market = _submitted(env)
    job = market.get_job(job_id)
    game = _requester(env)
    worker_credits = game.credits(env.dn.address("worker"))
    gid, opened = game.request_data(job_id, 3, job.dispute_bond)
    assert game.get_game(gid).phase == Phase.DATA_REQUEST
    env.drive(worker, lambda: game.get_game(gid).phase == Phase.RESOLVED)
    g = game.get_game(gid)
    assert g.outcome == Outcome.WORKER_WON
    assert game.resolutions(gid)[-1].reason == Reason.DATA_SERVED
    served = game.served_data(job_id)
    assert set(served) == {3}
    rec = worker.node.state.get(f"out:{job_id}", "00000003")
    assert merkle.tensor_root(served[3]) == bytes.fromhex(rec["root"])
    log = game._logs("DataServed", jobId=job_id)[-1]
    answer_gas = env.w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"]
    print(f"requestData gas {opened.gas_used}, answerData gas {answer_gas} for {len(served[3])} bytes")
    # the worker is paid DATA_FEE_BPS of the bond for its calldata (withdrawn by the daemon or still credited)
    fee = bps_up(job.dispute_bond, DATA_FEE_BPS)
    assert game.credits(env.dn.address("poster")) == job.dispute_bond - fee
    assert game.credits(env.dn.address("worker")) in (worker_credits + fee, 0)


def test_result_falls_back_to_served_data_when_ipfs_withholds(env):
    from gpumesh.ipfs.errors import NotFound
    from gpumesh.node.jobs.fetch import JobDataError
    from gpumesh.node.jobs.results import fetch_result

    job_id, worker, market = _submitted(env)
    job = market.get_job(job_id)
    game = _requester(env)
    honest = fetch_result(env.store(), market, job, env.dep.deploy_block)
    cid = honest.outputs_cid
    for u in range(job.num_units):
        gid, _ = game.request_data(job_id, u, job.dispute_bond)
        env.drive(worker, lambda gid=gid: game.get_game(gid).phase == Phase.RESOLVED)

    class Withholding:  # the content store of a poster whose IPFS node cannot find the outputs
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def cat(self, path, *a, **kw):
            if str(path).startswith(cid):
                raise NotFound(f"{cid}: not found")
            return self.inner.cat(path, *a, **kw)

    with pytest.raises(JobDataError, match="not available"):
        fetch_result(Withholding(env.store()), market, job, env.dep.deploy_block)
    res = fetch_result(Withholding(env.store()), market, job, env.dep.deploy_block, served=game.served_data)
    assert np.array_equal(res.outputs, honest.outputs)
    assert res.outputs_cid == "on-chain (DataServed)"


def test_unanswered_data_request_slashes_the_worker(env):
    job_id, worker, market = _submitted(env)
    worker.close()  # the worker goes silent (withholds) from here on
    env.apps.remove(worker)
    job = market.get_job(job_id)
    game = _requester(env)
    registry = env.registry()
    stake_before = registry.info(env.dn.address("worker")).total
    poster_before = registry.info(env.dn.address("poster")).credits
    gid, _ = game.request_data(job_id, 0, job.dispute_bond)
    env.anvil.increase_time(game.clock_seconds() + 1)
    res = env.dn.game("other", env.dn.w3()).resolve_timeout(gid)  # anyone moves it on
    print(f"resolveTimeout (unanswered data request, incl. slash settlement) gas {res.gas_used}")
    assert game.get_game(gid).outcome == Outcome.CHALLENGER_WON
    assert market.get_job(job_id).state == JobState.SLASHED
    assert registry.info(env.dn.address("worker")).total == stake_before - job.required_stake
    assert registry.info(env.dn.address("poster")).credits == poster_before + slash_paid(job.required_stake)
