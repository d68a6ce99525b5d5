"""The worker's side of dispute games: for every game opened on one of its jobs, the Responder
(gpumesh.node.dispute.responder, worker side) plays the honest worker strategy from the worker's
OWN data: its stored per-unit output roots and, for the disputed unit, a streaming trace recomputed
with the same executor that produced the outputs (Executor.trace_roots / op_outputs), so the
committed trace always matches the committed result. Built by `gpumesh worker run`; the WorkerNode calls `defend()` every tick
while a job has open games (moves are idempotent: the responder's outbox intents are per move).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gpumesh.node.jobs.fetch import JobData


class ResponderDefender:
    def __init__(self, client, responder, log: logging.Logger | None = None) -> None:
        self.client = client  # gpumesh.client.chain.dispute.DisputeGameClient
        self.responder = responder  # gpumesh.node.dispute.responder.Responder
        self.log = log or logging.getLogger("gpumesh.worker.defend")

    def defend(self, job_id: int, data: JobData, unit_roots: tuple[bytes, ...], trace: Callable[[int], object],
               unit_output: Callable[[int], bytes] | None = None) -> None:
        """`trace(u)`: unit u's trace (UnitTrace's interface; the node passes streaming traces, which
        it owns and drops when the job's games end: nothing is cached here). `unit_output(u)`: the
        stored output bytes of unit u, put on-chain to answer a data request (answerData)."""
        from gpumesh.client.core.game import Side
        from gpumesh.node.dispute.play import player_data

        player = player_data(data.bundle, unit_roots, trace, unit_output)
        for game_id in self.client.games_of_job(job_id):
            if self.responder.play(game_id, Side.WORKER, player):
                self.log.info("job %d: game %d: moved", job_id, game_id)
