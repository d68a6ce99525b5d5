"""What a worker operator reads (issue #16, stumble 4) on anvil with the real daemon: an
uninterrupted run executed over many ticks never says "resuming"; a claim race lost to another
worker is an INFO line and a `gone` job, never a failed tick or a reverted claim transaction."""

from __future__ import annotations

import logging

import pytest

from gpumesh.client.chain.types import JobState

pytestmark = pytest.mark.integration
ETH = 10**18


def test_an_uninterrupted_run_over_many_ticks_never_says_resuming(env, caplog):
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, window=600)
    w = env.worker(chunk_units=2, tick_budget_seconds=0.0)  # one step of 2 units per tick: 9 ticks
    market = env.market()
    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    assert "resuming at unit" not in caplog.text
    assert f"job {job_id}: executed 17 units" in caplog.text


def test_a_lost_claim_race_is_news_not_a_failure(env, caplog):
    """Worker B validated the job while it was Open; worker A claims first. B reads the chain
    again before claiming and lets the job go; and where B's read is stale (the race is lost
    between the read and the claim), the claim's revert at the gas estimate is taken the same way:
    no transaction is sent."""
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(2).stake(2 * ETH)
    env.registry(3).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, window=600)
    market = env.market()
    a, b = env.worker(2, "a"), env.worker(3, "b")
    stale = market.get_job(job_id)  # Open
    env.drive(a, lambda: market.get_job(job_id).state != JobState.OPEN)
    real = b.node.market.get_job
    b.node.market.get_job = lambda jid: stale if jid == job_id else real(jid)  # B's view lags the chain
    b.node.market.get_jobs = lambda ids: {i: b.node.market.get_job(i) for i in ids}  # the tick's batched read too
    env.drive(b, lambda: b.node.state.get("job", job_id) is not None
              and b.node.state.get("job", job_id)["status"] == "gone")
    rec = b.node.state.get("job", job_id)
    assert rec["reason"].startswith("lost the claim race"), rec
    assert f"job {job_id}: gone: lost the claim race" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "tick failed" in r.getMessage()]
    assert b.node.outbox.live(f"claim:job:{job_id}")[0] is None  # no claim transaction was signed


def test_the_faster_worker_claims_first_and_the_slower_sends_nothing(env, caplog):
    """Both workers accept the job; each waits before claiming in proportion to the share of the
    job's executionTime it needs (claim_stagger). The slow one (a measured 4 s per unit here) waits
    longer, re-reads the job before claiming, finds it taken and signs nothing. Two jobs of the same
    program: the second is validated without fetching the program folder again."""
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(2).stake(3 * ETH)
    env.registry(3).stake(3 * ETH)
    market = env.market()
    first, _ = env.post(reward=ETH // 2, stake=ETH, window=600, exec_time=900)
    fast = env.worker(2, "fast", claim_stagger=3.0)
    slow = env.worker(3, "slow", claim_stagger=3.0, unit_delay=4.0)  # the delay counts in its estimate
    rec = lambda w, j: w.node.state.get("job", j) or {}  # noqa: E731
    for _ in range(400):
        assert slow.daemon.tick_once() and fast.daemon.tick_once()
        if rec(slow, first).get("status") == "gone":
            break
    assert market.get_job(first).worker == fast.node.me
    assert rec(fast, first)["status"] in ("claimed", "submitted")
    assert rec(slow, first)["status"] == "gone", rec(slow, first)  # taken (or already submitted) when it looked
    assert slow.node.outbox.live(f"claim:job:{first}")[0] is None  # no claim transaction was signed
    assert rec(slow, first)["estimate_s"] > 10 * rec(fast, first)["estimate_s"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the same program again: spec and inputs are read, the program folder comes from the cache
    second, _ = env.post(reward=ETH // 2, stake=ETH, window=600, exec_time=900)
    before = fast.node._programs.hits
    env.drive(fast, lambda: rec(fast, second).get("status") in ("claimed", "submitted"))
    assert fast.node._programs.hits == before + 1
    tp = fast.node.state.all("throughput")
    assert list(tp) == [market.get_job(first).program_root.hex()] and tp[next(iter(tp))]["units_per_second"] > 0
