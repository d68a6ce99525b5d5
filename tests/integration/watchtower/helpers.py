"""Building watchtowers and a defending worker on the shared node devnet (tests only)."""

from __future__ import annotations

import logging
from pathlib import Path

from gpumesh.client.core.game import Side
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.responder import Responder
from gpumesh.node.watchtower.metrics import WatchtowerMetrics
from gpumesh.node.watchtower.tower import Watchtower, WatchtowerConfig


def make_tower(dn, state_path: Path, role: str = "watchtower", rate: float = 1.0, metrics: bool = False,
               log: logging.Logger | None = None, request_data: bool = False) -> Watchtower:
    from gpumesh.node.runtime.executor import Executor

    w3 = dn.w3()
    return Watchtower(
        market=dn.market(None, w3), registry=dn.registry(None, w3), game=dn.game(role, w3),
        content=dn.store(), state=StateStore(state_path), executor_factory=lambda b: Executor(b, "cpu"),
        config=WatchtowerConfig(sample_rate=rate, retry_seconds=0.0, request_data=request_data), from_block=dn.deployment.deploy_block,
        metrics=WatchtowerMetrics() if metrics else None, log=log,
    )


class DefendingWorker:
    """The worker's side of every game on its job, played by a Responder from what it committed
    (SubmittedJob.player_data: its own, possibly corrupt, traces)."""

    def __init__(self, dn, submitted, state_path: Path, role: str = "worker", silent: bool = False) -> None:
        self.dn, self.sub, self.silent = dn, submitted, silent
        self.game = dn.game(role)
        self.responder = Responder(self.game, StateStore(state_path))
        self.data = submitted.player_data()

    def __call__(self) -> None:
        if self.silent:
            return
        for gid in self.game.games_of_job(self.sub.job.job_id):
            self.responder.play(gid, Side.WORKER, self.data)


def run(tower: Watchtower, *others, max_ticks: int = 400) -> int:
    """Tick the tower, letting every other party act between ticks, until the tower is idle."""

    def between():
        for o in others:
            o()

    return tower.run_until_idle(max_ticks, between)
