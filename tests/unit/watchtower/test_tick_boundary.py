"""Watchtower.tick: any exception of one job's or game's handler (not only the project's own
errors) is logged with its id, counted (job_errors) and the loop goes on; the tick then reports
the failures (the Daemon backs off) and the failing one is retried next tick. An OK job keeps no
context (executor, data) in memory."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from gpumesh.client.core.errors import GpumeshError
from gpumesh.node.common.store import StateStore
from gpumesh.node.watchtower import tower as tower_mod
from gpumesh.node.watchtower.metrics import WatchtowerMetrics
from gpumesh.node.watchtower.tower import Watchtower
from tests.unit.fake_heads import NewBlocks


def _events(*a, **kw):
    """An EventReader that sees no new events."""
    return SimpleNamespace(poll=lambda head=None, top=None: [], commit=lambda: None)


def _tower(tmp_path, monkeypatch) -> Watchtower:
    monkeypatch.setattr(tower_mod, "EventReader", _events)
    game = SimpleNamespace(account_address="0x" + "22" * 20, sender=SimpleNamespace(address="0x" + "22" * 20),
                           result_of=None)
    market = SimpleNamespace(w3=None, contract=None, is_slashed=lambda j: False)
    t = Watchtower(market=market, registry=None, game=game, content=None, state=StateStore(tmp_path / "t.db"),
                   executor_factory=lambda b: None, metrics=WatchtowerMetrics())
    t._started = True
    t._heads = NewBlocks()  # a new block every tick
    return t


def test_a_failing_job_or_game_does_not_stop_the_others(tmp_path, monkeypatch, caplog):
    t = _tower(tmp_path, monkeypatch)
    checked, played = [], []

    def check(jid):
        checked.append(jid)
        if jid == 1:
            raise KeyError("not a GpumeshError")

    def play(gid, g):
        played.append(gid)
        if gid == 5:
            raise RuntimeError("rpc")

    t._check, t._play = check, play
    for jid in (1, 2):
        t.state.put("job", jid, {"status": "new"})
    for gid in (5, 6):
        t.state.put("game", gid, {"status": "open", "job_id": 9})
    with caplog.at_level(logging.WARNING), pytest.raises(GpumeshError, match="2 handler"):
        t.tick()
    assert checked == [1, 2] and played == [5, 6]
    assert t.metrics.job_errors._value.get() == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("job 1: KeyError") for m in msgs) and any(m.startswith("game 5: RuntimeError") for m in msgs)
    with pytest.raises(GpumeshError):
        t.tick()
    assert checked == [1, 2, 1, 2]  # retried next tick


def test_an_ok_job_keeps_no_context(tmp_path, monkeypatch):
    from gpumesh.client.chain.types import JobState
    from gpumesh.node.watchtower.checker import CheckResult

    t = _tower(tmp_path, monkeypatch)
    job = SimpleNamespace(state=JobState.SUBMITTED, worker="0x" + "33" * 20, deadline=10**12)
    t.market.get_job = lambda jid: job
    t.game.chain_now = lambda: 0
    ok = CheckResult(3, 1, (0,), {}, (b"\0" * 32,), (), False, False)
    bad = CheckResult(4, 1, (0,), {0: b"\1" * 32}, (b"\0" * 32,), (0,), False, False)
    results = {3: ok, 4: bad}
    t._run_check = lambda j, rec: (SimpleNamespace(cids=[]), results[rec["id"]])
    t._pin = lambda jid, cids: None
    for jid in (3, 4):
        t.state.put("job", jid, {"status": "new", "id": jid})
        t._check(jid)
    assert set(t._contexts) == {4}
    assert t.state.get("job", 3)["status"] == "ok" and t.state.get("job", 4)["status"] == "mismatch"
