"""The worker daemon in real dispute games (anvil + the real DisputeGame/Int8Verifier, embedded
IPFS, torch), against the real watchtower:
- a worker run with the TEST TOOL fault injector (`--corrupt`) commits outputs, result root and
  dispute trace that agree with each other; the watchtower challenges, the worker defends every
  move from its own trace down to the one-step, loses, and is slashed;
- an honest worker is checked and left alone, and is paid."""

from __future__ import annotations

import logging

import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.services.accounts import dev_account
from gpumesh.node.worker.faults import Fault, FaultyExecutor

pytestmark = pytest.mark.integration
ETH = 10**18


def _tower(env):
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.watchtower.tower import Watchtower, WatchtowerConfig

    dn = env.dn
    w3 = dn.w3()
    return Watchtower(market=dn.market(None, w3), registry=dn.registry(None, w3), game=dn.game("watchtower", w3),
                      content=dn.store(), state=StateStore(env.tmp / "tower.sqlite"),
                      executor_factory=lambda b: Executor(b, "cpu"),
                      config=WatchtowerConfig(sample_rate=1.0, retry_seconds=0.0),
                      from_block=dn.deployment.deploy_block)


def _until_settled(env, worker, tower, done, max_rounds: int = 400) -> None:
    for _ in range(max_rounds):
        if done():
            return
        assert worker.daemon.tick_once(), "worker tick failed"
        tower.tick()
    assert done(), "did not settle"


def _visible(fault: Fault) -> Fault:
    """The first element from `fault.element` on whose corruption changes the unit's output. The
    digits MLP ends in argmax and shrugs off most single corruptions; one that leaves the output
    alone is no wrong result, and nobody can or needs to catch it."""
    import numpy as np

    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, load_units
    from tests.integration.worker.conftest import MLP, MLP_INPUTS

    b = load_program(MLP)
    unit = load_units(MLP_INPUTS, b.program)[fault.unit]
    honest = Executor(b).run_unit(unit)
    probe = FaultyExecutor(b, fault)
    n = b.program.ops[probe.fault_op].desc.out.count
    for k in range(n):
        f = Fault(fault.unit, fault.op, (fault.element + k) % n)
        if not np.array_equal(FaultyExecutor(b, f).run_unit_at(fault.unit, unit), honest):
            return f
    raise AssertionError(f"no visible corruption near {fault}")


@pytest.mark.parametrize("fault", [Fault(5, "fc2", 17), Fault(0, 0, 300), Fault(16, -1, -1)],
                         ids=["middle-op", "first-op", "last-element"])
def test_cheating_worker_defends_and_is_slashed(env, caplog, fault):
    fault = fault if fault.element < 0 else _visible(fault)
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(6).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, bond=ETH // 10, window=3600)
    cheater = env.worker(6, "cheater", fault=fault)
    tower = _tower(env)
    market = env.market()
    _until_settled(env, cheater, tower, lambda: market.get_job(job_id).state == JobState.SLASHED
                   and cheater.node.state.get("job", job_id)["status"] == "slashed")
    rec = cheater.node.state.get("job", job_id)
    assert rec["disputed"] is True
    log = caplog.text
    assert f"job {job_id}: disputed" in log
    assert "re-executing unit" in log and f"unit {fault.unit} in streaming trace mode" in log
    assert "game:" in log and ":move:" in log  # the worker answered moves itself
    info = env.registry().info(dev_account(6).address)
    assert info.total == ETH and info.locked == 0  # its locked stake for the job is gone


def test_honest_worker_is_left_alone_and_paid(env):
    env.registry(2).stake(2 * ETH)
    job_id, _ = env.post(reward=ETH // 2, window=600)
    worker = env.worker()
    tower = _tower(env)
    market = env.market()
    _until_settled(env, worker, tower, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    for _ in range(5):
        tower.tick()
    assert tower.state.get("job", job_id)["status"] == "ok"
    env.anvil.increase_time(601)
    _until_settled(env, worker, tower, lambda: worker.node.state.get("job", job_id)["status"] == "done")
    assert market.get_job(job_id).state == JobState.FINALIZED and market.get_job(job_id).open_disputes == 0
