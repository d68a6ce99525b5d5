"""Issue #12 off-chain, on a real anvil with the real worker daemon objects: the acceptance policy
keeps the worker out of two attacks.

Attack 1 (stake drain by an unmeetable deadline): a poster posts a job paying 1 wei that locks all
of the worker's free stake, with an executionTime the worker cannot meet, hoping the worker claims,
misses the deadline and is slashed by expiry. The worker refuses (stake ratio with the defaults; the
measured run time when an operator lifted the ratio), the job expires unclaimed, and the worker's
stake is untouched.

Attack 6 (cheap dispute bonds): a job whose bond, less the burned half, pays less than defending a
whole game costs at the node's current gas price is refused."""

from __future__ import annotations

import json
import logging

import pytest

from gpumesh.client.chain.types import JobState, format_eth
from gpumesh.client.cli.main import main
from gpumesh.client.services.accounts import dev_account
from gpumesh.node.worker.policy import LOW_BOND, SHORT_EXECUTION_TIME, STAKE_RATIO, Policy
from tests.chain_node import dev_method
from tests.integration.worker.conftest import ETH, POSTER, WORKER

pytestmark = pytest.mark.integration
GWEI = 10**9


def balances(env) -> dict:
    poster, worker = dev_account(POSTER).address, dev_account(WORKER).address
    si = env.registry().info(worker)
    return {"poster wallet": env.w3.eth.get_balance(poster), "poster market credits": env.market().credits(poster),
            "worker stake total": si.total, "worker stake free": si.free, "worker stake locked": si.locked}


def cli_status(env, name: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["--home", str(env.tmp / "home"), "worker", "status", "--state", str(env.tmp / f"worker-{name}"),
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def until_decided(w, job_id: int):
    """Tick until the worker has decided about the job (refused it, or claimed it: then the test fails)."""
    return lambda: (w.node.state.get("job", job_id) or {}).get("status") not in (None, "new")


def test_attack1_stake_drain_job_is_refused_and_the_stake_stays(env, caplog, capsys):
    caplog.set_level(logging.INFO, logger="gpumesh")
    worker = dev_account(WORKER).address
    env.registry(WORKER).stake(2 * ETH)
    free = env.registry().free_stake(worker)
    # 1 wei for ALL the worker's free stake; 600 s to execute (over the chain's coming 300 s floor)
    job_id, _ = env.post(reward=1, stake=free, bond=free // 10, exec_time=600)
    before = balances(env)

    # 1. the default policy refuses it before downloading anything: stake over 100x the reward
    w = env.worker(name="default")
    env.drive(w, until_decided(w, job_id))
    rec = w.node.state.get("job", job_id)
    assert (rec["status"], rec["refusal"]) == ("skipped", STAKE_RATIO), rec
    assert "estimate_s" not in rec  # ruled out before the data was even fetched

    # 2. an operator who lifted the ratio is still protected by the measured run time: the worker
    # times one pass of the job's program and needs executionTime >= factor x estimate + margin
    # (a huge factor stands in for a slow machine: the 17 digits units take milliseconds here)
    lax = Policy(max_stake_ratio=1e30, safety_factor=1e9)
    w2 = env.worker(name="lax", policy=lax, chunk_units=1)
    env.drive(w2, until_decided(w2, job_id))
    rec2 = w2.node.state.get("job", job_id)
    assert (rec2["status"], rec2["refusal"]) == ("skipped", SHORT_EXECUTION_TIME), rec2
    assert 0 < rec2["estimate_s"] < 60, rec2  # measured on this machine's executor
    assert "execution time 600s is under" in rec2["reason"]
    assert f"job {job_id}: measured " in caplog.text

    # one INFO line per refusal, each worker once, and the reason in `gpumesh worker status --json`
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"job {job_id}: skipped:")]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in caplog.records
                                   if r.getMessage() in lines), lines
    for _ in range(3):
        assert w.daemon.tick_once() and w2.daemon.tick_once()
    assert len([r for r in caplog.records if r.getMessage().startswith(f"job {job_id}: skipped:")]) == 2
    st = cli_status(env, "default", capsys)
    assert st["jobs"][str(job_id)]["refusal"] == STAKE_RATIO and st["refusals"] == {STAKE_RATIO: 1}
    st2 = cli_status(env, "lax", capsys)
    assert st2["refusals"] == {SHORT_EXECUTION_TIME: 1}
    assert st2["jobs"][str(job_id)]["reason"] == rec2["reason"]

    # nobody claimed: after the claim deadline the job can only expire unclaimed (the poster gets
    # back its own 1 wei) and the worker's stake is exactly what it was
    assert env.market().get_job(job_id).state == JobState.OPEN
    env.anvil.increase_time(3601)
    env.market(POSTER).expire_job(job_id)
    assert env.market().get_job(job_id).state == JobState.EXPIRED
    after = balances(env)
    print(f"\nattack 1, job {job_id}: reward 1 wei, stake {format_eth(free)} (all free stake), executionTime 600 s")
    for k in before:
        print(f"  {k:<22} before {before[k]:>28}  after {after[k]:>28}  change {after[k] - before[k]:+d}")
    for k in ("worker stake total", "worker stake free", "worker stake locked"):
        assert after[k] == before[k], k
    assert after["worker stake locked"] == 0
    assert after["poster market credits"] - before["poster market credits"] == 1  # its own reward, nothing more


def test_attack6_bond_below_the_defence_cost_is_refused(env, caplog, capsys):
    caplog.set_level(logging.INFO, logger="gpumesh")
    env.registry(WORKER).stake(2 * ETH)
    bond = ETH // 10  # over the chain's floors (5% of the stake, the deployment minimum)
    job_id, _ = env.post(reward=ETH // 2, stake=ETH, bond=bond, exec_time=3600)
    # gas gets expensive before the worker looks: a 1000 gwei base fee (it sinks at most 12.5% per
    # block), so one whole defence (1M gas) costs about 1 ETH and a lost challenge pays the worker
    # back only half the 0.1 ETH bond
    base = env.w3.eth.get_block("latest")["baseFeePerGas"]
    set_base = dev_method(env.anvil, "anvil_setNextBlockBaseFeePerGas")
    env.anvil.rpc(set_base, [hex(1000 * GWEI)])
    env.anvil.rpc("evm_mine")
    price = env.w3.eth.gas_price
    assert Policy().max_defence_gas * price * 2 > 10 * bond, price
    w = env.worker(name="bond")
    try:
        env.drive(w, until_decided(w, job_id))
    finally:  # the node's next-block fee survives the fixture's evm_revert: put it back for later tests
        env.anvil.rpc(set_base, [hex(base)])
        env.anvil.rpc("evm_mine")
    rec = w.node.state.get("job", job_id)
    assert (rec["status"], rec["refusal"]) == ("skipped", LOW_BOND), rec
    assert "pays the worker 0.05 ETH when a challenger loses, less than defending costs (1000000 gas at" in rec["reason"]
    assert env.market().get_job(job_id).state == JobState.OPEN
    assert env.registry().info(dev_account(WORKER).address).locked == 0
    assert cli_status(env, "bond", capsys)["refusals"] == {LOW_BOND: 1}
    print(f"\nattack 6, job {job_id}, node gas price {price / GWEI:g} gwei: skipped: {rec['reason']}")
