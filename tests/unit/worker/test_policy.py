"""The worker's acceptance policy (gpumesh.node.worker.policy): each rule accepts at its boundary and
refuses one step past it, and the rules are checked in order (reward, stake ratio, bond, time)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpumesh.client.chain.types import Job, JobState
from gpumesh.node.worker import policy as P

ETH = 10**18
GWEI = 10**9


def job(**kw) -> Job:
    base = dict(job_id=1, poster="0x" + "11" * 20, reward=ETH // 2, required_stake=ETH, dispute_bond=ETH // 10,
                execution_time=3600, challenge_window=600, deadline=0, num_units=17, open_disputes=0,
                state=JobState.OPEN, claim_deadline=0, worker="0x" + "00" * 20, program_root=b"\x01" * 32, inputs_root=b"\x02" * 32,
                result_root=b"\x00" * 32, first_won_game=0, first_winner="0x" + "00" * 20)
    base.update(kw)
    return Job(**base)


DEFAULT = P.Policy()


def test_an_ordinary_job_is_accepted_with_the_defaults():
    assert P.judge(job(), None, 30 * GWEI, DEFAULT) is None
    assert P.judge(job(), 10.0, 30 * GWEI, DEFAULT) is None


def test_min_reward_boundary():
    pol = P.Policy(min_reward=ETH // 2)
    assert P.judge(job(reward=ETH // 2), None, 0, pol) is None
    r = P.judge(job(reward=ETH // 2 - 1), None, 0, pol)
    assert r is not None and r.reason == P.LOW_REWARD and "below this worker's minimum" in r.detail


def test_stake_ratio_boundary():
    assert P.judge(job(reward=ETH, required_stake=100 * ETH), None, 0, DEFAULT) is None
    r = P.judge(job(reward=ETH, required_stake=100 * ETH + 1), None, 0, DEFAULT)
    assert r is not None and r.reason == P.STAKE_RATIO
    # attack 1's job: 1 wei of reward for all of a worker's stake
    r = P.judge(job(reward=1, required_stake=2 * ETH), None, 0, DEFAULT)
    assert r is not None and r.reason == P.STAKE_RATIO and "100x the reward" in r.detail


def test_fractional_stake_ratio_is_exact():
    pol = P.Policy(max_stake_ratio=2.5)
    assert P.judge(job(reward=2 * ETH, required_stake=5 * ETH), None, 0, pol) is None
    assert P.judge(job(reward=2 * ETH, required_stake=5 * ETH + 1), None, 0, pol).reason == P.STAKE_RATIO


def test_bond_must_pay_back_the_defence_at_the_gas_price():
    price = 50 * GWEI
    cost = DEFAULT.max_defence_gas * price  # 0.05 ETH
    # the worker is credited the bond less the burned half when a challenger loses
    enough = 2 * cost  # half of the bond burns (BOND_BURN_BPS = 5,000, rounded up)
    assert P.bond_payout(enough) == cost and P.bond_payout(enough - 1) == cost - 1
    assert P.judge(job(dispute_bond=enough), None, price, DEFAULT) is None
    r = P.judge(job(dispute_bond=enough - 1), None, price, DEFAULT)
    assert r is not None and r.reason == P.LOW_BOND and "50000000000 wei" in r.detail
    # the same bond is fine when gas is cheap, and any bond is fine at a zero price
    assert P.judge(job(dispute_bond=enough - 1), None, price // 2, DEFAULT) is None
    assert P.judge(job(dispute_bond=1), None, 0, DEFAULT) is None


def test_execution_time_boundary():
    # 3 x 100 s + 60 s = 360 s
    assert P.judge(job(execution_time=360), 100.0, 0, DEFAULT) is None
    r = P.judge(job(execution_time=359), 100.0, 0, DEFAULT)
    assert r is not None and r.reason == P.SHORT_EXECUTION_TIME and "360s" in r.detail
    # no estimate yet: the time rules wait for the measurement
    assert P.judge(job(execution_time=1), None, 0, DEFAULT) is None


def test_execution_time_counts_the_work_already_claimed():
    # alone it fits (360 s); with 20 s of claimed work ahead it needs 3 x 120 + 60 = 420 s
    assert P.judge(job(execution_time=420), 100.0, 0, DEFAULT, backlog=20.0) is None
    r = P.judge(job(execution_time=419), 100.0, 0, DEFAULT, backlog=20.0)
    assert r is not None and r.reason == P.BUSY_DEADLINE and "already claimed" in r.detail


def test_time_left_overrides_the_execution_time():
    # a claim that would leave less than the estimate (with its factor and margin) before the deadline
    assert P.judge(job(execution_time=3600), 100.0, 0, DEFAULT, time_left=360) is None
    assert P.judge(job(execution_time=3600), 100.0, 0, DEFAULT, time_left=359).reason == P.SHORT_EXECUTION_TIME


def test_rules_are_checked_in_order():
    bad = job(reward=1, required_stake=2 * ETH, dispute_bond=1, execution_time=1)
    assert P.judge(bad, 100.0, GWEI, P.Policy(min_reward=2)).reason == P.LOW_REWARD
    assert P.judge(bad, 100.0, GWEI, DEFAULT).reason == P.STAKE_RATIO
    lax = P.Policy(max_stake_ratio=1e30)
    assert P.judge(bad, 100.0, GWEI, lax).reason == P.LOW_BOND
    assert P.judge(replace(bad, dispute_bond=ETH), 100.0, GWEI, lax).reason == P.SHORT_EXECUTION_TIME


@pytest.mark.parametrize("kw", [dict(safety_factor=0.9), dict(max_stake_ratio=0), dict(time_margin=-1),
                                dict(min_reward=-1), dict(gas_price=-1), dict(max_defence_gas=-1)])
def test_settings_are_checked(kw):
    with pytest.raises(ValueError):
        P.Policy(**kw)


def test_default_defence_gas_covers_the_measured_worker_side_of_a_game():
    # docs/protocol.md 5.6, reference game: 10 reveals + commitTrace + revealLeaf, the worker's 12 moves
    worker_moves = 10 * 62_507 + 72_719 + 65_267
    assert worker_moves < P.DEFAULT_MAX_DEFENCE_GAS < 2 * worker_moves


def test_claim_delay_puts_the_machines_that_need_less_of_the_time_first():
    from gpumesh.node.worker.policy import claim_delay

    pol = P.Policy(safety_factor=3.0, time_margin=60.0)
    j = job(execution_time=3600)
    fast = claim_delay(2.0, j, 1.0, pol)  # (3 x 1 + 60) / 3600 of the stagger
    slow = claim_delay(2.0, j, 300.0, pol)  # (3 x 300 + 60) / 3600
    assert fast == pytest.approx(2.0 * 63 / 3600) and slow == pytest.approx(2.0 * 960 / 3600)
    assert fast < slow
    assert claim_delay(2.0, j, 10_000.0, pol) == 2.0  # capped at the stagger
    assert claim_delay(0.0, j, 300.0, pol) == 0.0
