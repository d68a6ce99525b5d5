"""WorkerNode.tick has a per-job error boundary (one failing job does not stop the defence of the
later ones; it is logged, counted and retried next tick), and a disputed job's streaming traces
are dropped, with their cached op outputs, once its games end."""

from __future__ import annotations

import logging
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from gpumesh.client.core import merkle
from gpumesh.client.core.errors import GpumeshError
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.play import TraceCache
from gpumesh.node.dispute.strategy import leaf_of
from gpumesh.node.runtime.chainprog import chain_program, chain_units
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.worker import node as worker_node
from gpumesh.node.worker.node import JOB, WorkerConfig, WorkerNode
from tests.unit.fake_heads import NewBlocks


def _events(*a, **kw):
    """An EventReader that sees no new events."""
    return SimpleNamespace(poll=lambda head=None, top=None: [], commit=lambda: None)


class _Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


class _Market:
    """get_job(1) fails (an RPC hiccup, a bug); the others are submitted and disputed."""

    def __init__(self, open_disputes: int = 1) -> None:
        self.w3, self.contract, self.open_disputes = None, None, open_disputes

    def get_job(self, jid: int):
        if jid == 1:
            raise ValueError("boom")
        from gpumesh.client.chain.types import JobState

        return SimpleNamespace(job_id=jid, state=JobState.SUBMITTED, open_disputes=self.open_disputes, num_units=2,
                               deadline=10**12)


def _node(tmp_path, monkeypatch, market, **kw) -> WorkerNode:
    monkeypatch.setattr(worker_node, "EventReader", _events)
    n = WorkerNode(market=market, registry=None, outbox=SimpleNamespace(address="0x" + "11" * 20, recheck=lambda head, top=None: 0), store=None,
                   state=StateStore(tmp_path / "w.db"), config=WorkerConfig(), inventory=None,
                   metrics=_Metrics(), **kw)
    n._started = True
    n._heads = NewBlocks()  # a new block every tick
    n._chain_now = lambda: 0
    return n


def test_a_failing_job_does_not_stop_the_later_jobs(tmp_path, monkeypatch, caplog):
    defended: list[int] = []
    node = _node(tmp_path, monkeypatch, _Market())
    node._defend = lambda job, rec: defended.append(job.job_id)
    for jid in (1, 2, 3):
        node.state.put(JOB, jid, {"status": "submitted", "disputed": True})
    with caplog.at_level(logging.WARNING), pytest.raises(GpumeshError, match="1 job"):
        node.tick()
    assert defended == [2, 3]  # the jobs after the failing one were defended in the same tick
    assert node.metrics.counts["job_errors"] == 1
    lines = [r.getMessage() for r in caplog.records if "boom" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("job 1:")
    with pytest.raises(GpumeshError):
        node.tick()  # retried next tick (still failing here), the others again defended
    assert defended == [2, 3, 2, 3] and node.metrics.counts["job_errors"] == 2
    assert node.state.get(JOB, 1)["status"] == "submitted"  # nothing recorded against the job


def test_traces_are_dropped_when_the_games_end(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    bundle = chain_program(rng, 6, 2, 16)
    units = chain_units(rng, bundle, 2)
    market = _Market(open_disputes=1)
    seen = []

    class Defender:
        def defend(self, job_id, data, unit_roots, trace, unit_output=None):
            t = trace(1)
            seen.append((t.trace_root, t.leaf(3, 0), unit_roots))

    cache = TraceCache(1 << 20)
    node = _node(tmp_path, monkeypatch, market, defender=Defender(), trace_cache=cache)
    outs = Executor(bundle).run_units(units)
    roots = merkle.tensor_roots(np.ascontiguousarray(outs))
    node.state.put_many("out:2", [(f"{u:08d}", {"root": r.hex()}) for u, r in enumerate(roots)])
    node._data[2] = SimpleNamespace(bundle=bundle, units=units, spec=SimpleNamespace(program_cid="bafyP"))
    job = market.get_job(2)
    node._defend(job, {})
    full = Executor(bundle).trace(units[1])
    assert seen[0][0] == full.trace_root and seen[0][1] == leaf_of(full.outputs[3], 0)
    assert seen[0][2] == tuple(roots)
    assert 2 in node._traces and len(cache) > 0
    market.open_disputes = 0  # the last game resolved
    node._defend(job, {})
    assert 2 not in node._traces and len(cache) == 0
