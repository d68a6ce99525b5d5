"""Sharded jobs on a real anvil + the embedded IPFS node + torch (docs/protocol.md 4.12): `job post
--shards N` posts N jobs in one postJobs transaction, each shard claimed by its own worker with its
own stake, result root, disputes and payout; a shard whose worker dies is re-opened and finished by
another; a cheated shard is slashed by the watchtower while the others pay; `job result` assembles
the shards, each verified against its own on-chain root."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.node.runtime.files import load_program, load_units
from tests.integration.nodes.conftest import Corruption, PostedJob, submit_as_worker
from tests.integration.poster.test_poster_cli import INPUTS, LABELS, MLP, NAMES, _one_line, _post_args
from tests.integration.watchtower.helpers import DefendingWorker, make_tower, run

pytestmark = pytest.mark.integration

HONEST = (2, 5, 7, 8)  # dev accounts of the honest worker daemons
DEAD, CHEATER = 9, "cheater"  # a worker that claims and dies; a worker that lies (dev6)


def _post_sharded(gm, *extra: str) -> dict:
    out, _ = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS), "--class-names", NAMES,
                            "--samples", "540", "--exec-time", "5m", "--json", *extra))
    return json.loads(out)


def _tick_all(workers, until, max_rounds: int = 120) -> None:
    for _ in range(max_rounds):
        if until():
            return
        for w in workers:
            assert w.daemon.tick_once(), "a worker tick failed (see the captured log)"
    assert until(), "condition not reached"


def test_sharded_job_all_honest_assembles_like_one_job(env, gm, tmp_path):
    posted = _post_sharded(gm, "--shards", "3")
    ids = posted["job_ids"]
    assert [s["units"] for s in posted["shards"]] == [6, 6, 5] and ids == list(range(ids[0], ids[0] + 3))
    market = env.market()
    # one reward escrowed in total, split by units; stakes rounded up
    assert sum(market.get_job(j).reward for j in ids) == 5 * 10**17
    assert [market.get_job(j).required_stake for j in ids] == [-(-10**18 * n // 17) for n in (6, 6, 5)]
    spec = JobSpecDoc.from_bytes(env.store().cat(posted["shards"][2]["spec_cid"]))
    assert spec.meta["shard"] == {"index": 2, "count": 3, "first_unit": 12, "units": 5}
    assert spec.meta["samples"] == 540 - 12 * 32
    workers = []
    for i in HONEST[:3]:
        env.registry(i).stake(10**18)
        workers.append(env.worker(i, name=f"w{i}"))
    _tick_all(workers, lambda: all(market.get_job(j).state == JobState.SUBMITTED for j in ids))
    assert len({market.get_job(j).worker for j in ids}) >= 2, "the shards are claimed by several workers"

    out, _ = gm("job", "result", str(ids[1]), "-o", str(tmp_path / "res"), "--labels", str(LABELS), "--json", *gm.d)
    res = json.loads(out)
    truth = json.loads(LABELS.read_text())
    assert res["job_ids"] == ids and len(res["result_roots"]) == 3
    assert res["result_roots"] == ["0x" + market.get_job(j).result_root.hex() for j in ids]
    assert res["samples"] == 540 and res["accuracy"] > 0.9
    # the same predictions as running the whole job in one piece
    from gpumesh.node.runtime.executor import Executor

    b = load_program(MLP)
    whole = Executor(b).run(load_units(INPUTS, b.program)).outputs
    assert res["predictions"] == [int(p) for p in whole.argmax(axis=-1).reshape(-1)[:540]] or \
        res["predictions"] == [int(p) for p in whole.reshape(-1)[:540]]
    assert res["accuracy"] == pytest.approx(np.mean(np.array(res["predictions"]) == np.array(truth)))
    out, _ = gm("job", "result", str(ids[1]), "--this-shard", "-o", str(tmp_path / "one"), "--json", *gm.d)
    assert json.loads(out)["samples"] == 6 * 32


def test_sixteen_shards_dead_worker_reopened_cheater_slashed(env, gm, tmp_path):
    """Show 1 of the mesh issue: 16 shards over 4 honest workers, one shard claimed by a worker that
    dies (expired, re-opened, finished by another), one cheated and slashed while the others pay."""
    posted = _post_sharded(gm, "--shards", "16")
    ids = posted["job_ids"]
    assert len(ids) == 16 and posted["units"] == 17
    market, dn = env.market(), env.dn
    dead, cheated = ids[3], ids[7]
    # the dead worker claims shard 3 and is never heard of again
    env.registry(DEAD).stake(10**18)
    env.market(DEAD).claim_job(dead)
    # the cheater claims shard 7 and submits a result with one corrupted element
    b = load_program(MLP)
    sh = posted["shards"][7]
    first = sum(s["units"] for s in posted["shards"][:7])
    prog = tmp_path / "cheater" / "program"  # submit_as_worker writes its outputs file beside it
    shutil.copytree(MLP, prog)
    pj = PostedJob(cheated, sh["spec_cid"], posted["program_cid"], "", prog, load_units(INPUTS, b.program)[
        first:first + sh["units"]], bytes.fromhex(posted["program_root"][2:]), bytes.fromhex(sh["inputs_root"][2:]),
        sh["reward"], sh["stake"], market.get_job(cheated).dispute_bond)
    sub = submit_as_worker(dn, pj, worker=CHEATER, stake=10**18,
                           corruptions=(Corruption(unit=0, op=len(b.program.ops) - 1, element=3, delta=5),))
    workers = []
    for i in HONEST:
        # stake for 4 one-unit shards each: a worker's stake bounds the shards it holds at once
        env.registry(i).stake(10**18 // 4)
        workers.append(env.worker(i, name=f"w{i}"))
    others = [j for j in ids if j not in (dead, cheated)]
    _tick_all(workers, lambda: all(market.get_job(j).state == JobState.SUBMITTED for j in others))
    assert len({market.get_job(j).worker for j in others}) == 4, "the shards spread over the 4 workers"

    # the watchtower checks every shard, catches shard 7 and wins the game down to one element
    tower = make_tower(dn, tmp_path / "wt.sqlite")
    run(tower, DefendingWorker(dn, sub, tmp_path / "cheater.sqlite", role=CHEATER))
    assert market.get_job(cheated).state == JobState.SLASHED
    assert all(market.get_job(j).state == JobState.SUBMITTED for j in others), "the other shards are untouched"

    # the dead worker's execution deadline passes: anyone expires shard 3, which re-opens
    env.anvil.increase_time(301)
    before = env.registry().info(dn.address(f"dev{DEAD}")).total
    res = env.market(5).expire_job(dead)
    assert res.event("JobReopened")["worker"] == dn.address(f"dev{DEAD}")
    burn = -(-market.get_job(dead).required_stake // 10)  # EXPIRY_SLASH_BPS, rounded up
    assert env.registry().info(dn.address(f"dev{DEAD}")).total == before - burn
    assert market.get_job(dead).state == JobState.OPEN
    _tick_all(workers, lambda: market.get_job(dead).state == JobState.SUBMITTED)
    assert market.get_job(dead).worker in {dn.address(f"dev{i}") for i in HONEST}

    # every honest shard is finalized and paid its own reward
    env.anvil.increase_time(601)
    _tick_all(workers, lambda: all(market.get_job(j).state == JobState.FINALIZED for j in others + [dead]))
    paid = sum(market.get_job(j).reward for j in others + [dead])
    assert paid == 5 * 10**17 - market.get_job(cheated).reward
    assert market.credits(dn.address("poster")) == market.get_job(cheated).reward, "the slashed shard is refunded"

    # job result names the shard that has no result; each good shard verifies on its own
    _, err = gm("job", "result", str(ids[0]), "-o", str(tmp_path / "res"), *gm.d, code=5)
    _one_line(err, f"job {ids[0]}: 1 of 16 shards have no result to use: {cheated} (Slashed)")
    # the 15 good shards' outputs, each verified against its own on-chain root
    for j in others + [dead]:
        out, _ = gm("job", "result", str(j), "--this-shard", "-o", str(tmp_path / f"r{j}"), "--json", *gm.d)
        res = json.loads(out)
        assert res["final"] and res["result_root"] == "0x" + market.get_job(j).result_root.hex()
