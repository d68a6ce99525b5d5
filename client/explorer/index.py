"""What the explorer knows from events alone: `ChainIndex.apply(events)` folds the decoded events of
JobMarket, WorkerRegistry and DisputeGame (gpumesh.client.chain.events.ChainEvent, in chain order)
into facts per job, per worker, per challenger (watchtower) and per game. Pure: no I/O; the reader
(gpumesh.client.explorer.reader) feeds it and adds the views (getJob, stakeOf, getGame).

Events are folded once each (the reader's EventReader delivers every log once, keyed by block hash
and log index). Amounts stay in wei (int); the JSON layer turns them into strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpumesh.client.chain.events import ChainEvent
from gpumesh.client.core.game import DATA_FEE_BPS, Outcome, Reason, bps_up


@dataclass
class JobFacts:
    job_id: int
    poster: str = ""
    spec_cid: str = ""
    posted_block: int = 0
    worker: str = ""
    execution_deadline: int = 0
    result_root: bytes = b""
    outputs_cid: str = ""
    challenge_deadline: int = 0
    paid: int = 0  # reward paid at finalization
    games: list[int] = field(default_factory=list)
    timeline: list[ChainEvent] = field(default_factory=list)


@dataclass
class WorkerFacts:
    address: str
    staked: int = 0  # sum of Staked amounts (the current stake is a view)
    claimed: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    rewards: int = 0  # JobFinalized rewards
    game_income: int = 0  # bonds of lost challenges and data-request fees credited to the worker
    slashes: list[dict[str, int]] = field(default_factory=list)  # {job, game, stake}
    slashed: int = 0  # StakeSlashed amounts

    @property
    def earnings(self) -> int:
        return self.rewards + self.game_income


@dataclass
class TowerFacts:
    address: str
    games: list[int] = field(default_factory=list)
    data_requests: list[int] = field(default_factory=list)
    bonds: int = 0
    won: int = 0
    lost: int = 0
    paid: int = 0  # slash shares received (SlashSettled)
    bonds_lost: int = 0  # what lost games cost it (bond to the worker and burned)


@dataclass
class GameFacts:
    game_id: int
    job_id: int
    challenger: str
    worker: str
    bond: int
    num_units: int
    result_root: bytes
    opened_block: int
    data_unit: int | None = None  # a data request's unit (None: a challenge)
    outcome: Outcome = Outcome.OPEN
    reason: Reason | None = None
    burned: int = 0
    resolved_block: int = 0
    events: list[ChainEvent] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "challenge" if self.data_unit is None else "data request"


class ChainIndex:
    """Facts folded from events; `head` is the last block the reader has fed."""

    def __init__(self, market: str, registry: str, game: str) -> None:
        self.market, self.registry, self.game = (a.lower() for a in (market, registry, game))
        self.jobs: dict[int, JobFacts] = {}
        self.workers: dict[str, WorkerFacts] = {}
        self.towers: dict[str, TowerFacts] = {}
        self.games: dict[int, GameFacts] = {}
        self.blocks: set[int] = set()  # blocks holding an event (the reader fetches their times)
        self.head = 0
        self.events_seen = 0  # the page redraws when this moves (every state change emits an event)

    # ---------------------------------------------------------------- folding
    def apply(self, events: list[ChainEvent]) -> None:
        for ev in events:
            self.events_seen += 1
            self.blocks.add(ev.block_number)
            src = ev.address.lower()
            handler = {self.market: self._market, self.registry: self._registry, self.game: self._game}.get(src)
            if handler is not None:
                handler(ev, ev.args)

    def worker(self, address: str) -> WorkerFacts:
        return self.workers.setdefault(address, WorkerFacts(address))

    def tower(self, address: str) -> TowerFacts:
        return self.towers.setdefault(address, TowerFacts(address))

    def job(self, job_id: int) -> JobFacts:
        return self.jobs.setdefault(int(job_id), JobFacts(int(job_id)))

    def _market(self, ev: ChainEvent, a: dict[str, Any]) -> None:
        if "jobId" not in a:
            return  # Withdrawn: an account's credits, no job
        j = self.job(a["jobId"])
        j.timeline.append(ev)
        name = ev.name
        if name == "JobPosted":
            j.poster, j.spec_cid, j.posted_block = a["poster"], a["specCid"], ev.block_number
        elif name == "JobClaimed":
            j.worker, j.execution_deadline = a["worker"], int(a["executionDeadline"])
            self.worker(a["worker"]).claimed.append(j.job_id)
        elif name == "ResultSubmitted":
            j.result_root, j.outputs_cid = bytes(a["resultRoot"]), a["outputsCid"]
            j.challenge_deadline = int(a["challengeDeadline"])
        elif name == "JobFinalized":
            j.paid = int(a["reward"])
            w = self.worker(a["worker"])
            w.finalized.append(j.job_id)
            w.rewards += int(a["reward"])
        elif name == "JobSlashed":
            self.worker(a["worker"]).slashes.append({"job": j.job_id, "game": int(a["gameId"]), "stake": int(a["stake"])})
        elif name == "SlashSettled":
            self.tower(a["challenger"]).paid += int(a["paid"])

    def _registry(self, ev: ChainEvent, a: dict[str, Any]) -> None:
        if ev.name == "Staked":
            self.worker(a["worker"]).staked += int(a["amount"])
        elif ev.name == "StakeSlashed":
            self.worker(a["worker"]).slashed += int(a["amount"])

    def _game(self, ev: ChainEvent, a: dict[str, Any]) -> None:
        if "gameId" not in a:
            return  # Withdrawn
        gid = int(a["gameId"])
        if ev.name == "GameOpened":
            g = GameFacts(gid, int(a["jobId"]), a["challenger"], a["worker"], int(a["bond"]), int(a["numUnits"]),
                          bytes(a["resultRoot"]), ev.block_number)
            self.games[gid] = g
            self.job(g.job_id).games.append(gid)
            t = self.tower(g.challenger)
            t.games.append(gid)
            t.bonds += g.bond
        g = self.games.get(gid)
        if g is None:
            return  # an event of a game opened before the reader's first block
        g.events.append(ev)
        if ev.name == "DataRequested":
            g.data_unit = int(a["unitIndex"])
            self.tower(g.challenger).data_requests.append(gid)
        elif ev.name == "GameResolved":
            g.outcome, g.reason, g.burned = Outcome(a["outcome"]), Reason(a["reason"]), int(a["burned"])
            g.resolved_block = ev.block_number
            t = self.tower(g.challenger)
            if g.outcome == Outcome.CHALLENGER_WON:
                t.won += 1
                return
            t.lost += 1
            # The worker is credited the bond less the burned share (a lost challenge), or the data fee.
            income = bps_up(g.bond, DATA_FEE_BPS) if g.reason == Reason.DATA_SERVED else g.bond - g.burned
            t.bonds_lost += income + g.burned
            self.worker(g.worker).game_income += income
