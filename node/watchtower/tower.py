"""The watchtower daemon: watches submitted results, re-executes all units of each job or a seeded
random sample, compares its per-unit output roots with the worker's published ones (after checking
those against the on-chain result root), challenges on a mismatch, plays the game to the end as the
challenger (gpumesh.node.dispute.responder), resolves the worker's timeouts and withdraws its winnings.

    tower = Watchtower(market=..., registry=..., game=..., content=KuboStore(...), state=StateStore(...),
                       executor_factory=lambda bundle: Executor(bundle, "cpu"), config=WatchtowerConfig())
    Daemon("watchtower", tower.tick, interval=2.0).run_forever()

Crash safety: everything lives in the StateStore, keyed by on-chain ids: `job/<id>` records (status,
sampling seed and sample, what was found, the game id) and `game/<id>` records; every transaction
goes through the outbox (intent `job:<id>:challenge`, `game:<id>:move:<n>`...), recorded signed before
it is sent. A tick only moves records forward from what the chain says, so a watchtower killed at any
point and restarted re-reads, re-executes deterministically and resumes without a second transaction.

Built by `gpumesh watchtower run`; everything (clients, stores, executor factory, clock) is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpumesh.client.chain.dispute import DisputeGameClient
from gpumesh.client.chain.events import EventReader, find_logs
from gpumesh.client.chain.provider import Head, HeadSource, RpcUnavailable, stats_of
from gpumesh.client.chain.types import JobState
from gpumesh.client.core import merkle
from gpumesh.client.core.errors import ChainError, GpumeshError
from gpumesh.client.core.game import Outcome, Side
from gpumesh.node.common.cursor import StateCursorStore
from gpumesh.node.common.outbox import Sent
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.play import TraceCache, executor_traces, int8_prover, player_data, spliced_roots
from gpumesh.node.dispute.responder import Responder
from gpumesh.node.jobs.fetch import JobData, JobDataError, JobLimits, fetch_job, read_bounded, spec_cid_of
from gpumesh.node.jobs.outputs import unit_output_roots, verify_outputs
from gpumesh.node.watchtower.checker import CheckResult, check_rate, draw_seed, mismatches, sample_units

#: Even with no new block, a full tick at least this often (a game clock runs on chain time, which
#: an automining devnet only advances with a block; this bounds any such wait).
IDLE_FULL_TICK_SECONDS = 30.0

#: Job record statuses. Final ones are never revisited.
CHECKING = ("new", "retry")
FINAL = ("ok", "skipped", "invalid", "won", "lost", "answered")


@dataclass(frozen=True)
class WatchtowerConfig:
    sample_rate: float = 1.0
    confirmations: int | str = 0  # blocks on top of an event, or 'safe' / 'finalized'
    retry_seconds: float = 30.0  # wait before re-fetching data that was unreachable
    max_outputs_bytes: int = 1 << 30
    limits: JobLimits = field(default_factory=JobLimits)
    # When a job's outputs file cannot be fetched (withheld), also open a data request
    # (docs/protocol.md 5.8) for one unit drawn from the job's seed: the worker must put it
    # on-chain (half the bond pays its calldata) or be slashed (half its stake to us).
    request_data: bool = False

    def __post_init__(self) -> None:
        check_rate(self.sample_rate)


@dataclass
class _JobContext:
    """What a job's game needs, rebuilt from IPFS + re-execution after a restart (deterministic)."""

    data: JobData
    executor: Any
    unit_roots: tuple[bytes, ...]  # the challenger's result-tree leaves
    prover: Any
    cids: list[str] = field(default_factory=list)  # spec, program, inputs (, outputs)
    _player: Any = None
    _traces: Any = None

    def player(self, cache: TraceCache):
        """The challenger's PlayerData: streaming traces of its own re-execution (roots only; op
        outputs recomputed on demand into the watchtower's bounded `cache`, docs/protocol.md 7)."""
        if self._player is None:
            self._traces = executor_traces(self.executor, self.data.units, cache, int(self.data.job_id))
            self._player = player_data(self.data.bundle, self.unit_roots, self._traces)
        return self._player

    def close(self) -> None:
        """The game ended: forget the traces and evict their cached op outputs."""
        if self._traces is not None:
            self._traces.close()
        self._player = self._traces = None


class Watchtower:
    def __init__(self, *, market, registry, game: DisputeGameClient, content, state: StateStore,
                 executor_factory: Callable[[Any], Any], config: WatchtowerConfig | None = None,
                 from_block: int = 0, metrics=None, log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time, trace_cache: TraceCache | None = None) -> None:
        self.market, self.registry, self.game = market, registry, game
        self.content = content
        self.state = state
        self.executor_factory = executor_factory
        self.config = config or WatchtowerConfig()
        self.from_block = from_block
        self.metrics = metrics
        self.log = log or logging.getLogger("gpumesh.watchtower")
        self.clock = clock
        self.me = game.account_address
        self.responder = Responder(game, state, log=self.log, on_sent=self._sent)
        self.events = EventReader(market.w3, [market.contract], StateCursorStore(state, "market"), start_block=from_block,
                                  confirmations=self.config.confirmations)
        self._contexts: dict[int, _JobContext] = {}  # jobs with a game to play (mismatches) only
        self._trace_cache = trace_cache if trace_cache is not None else TraceCache()
        self._started = False
        self._heads = HeadSource(market.w3)  # newHeads over ws://, one header over HTTP
        if metrics is not None and hasattr(metrics, "rpc"):
            metrics.rpc(stats_of(market.w3))
        self._last_head: Head | None = None
        self._full_tick_at = 0.0

    # ================================================================ the loop
    def tick(self) -> None:
        if not self._started:
            settled = self.responder.outbox.flush()  # settle what a previous life recorded
            for sent in settled:
                self._sent(sent)
            if settled:
                self.log.info("settled %d recorded transaction(s) from before the restart", len(settled))
            self._scan_submitted()
            self._started = True
        top = self._heads.head()
        head = top.number
        if top == self._last_head and not self._clock_work() and self.clock() < self._full_tick_at:
            return  # no new block and nothing waiting on the clock: one request (none over ws://)
        self._last_head, self._full_tick_at = top, self.clock() + IDLE_FULL_TICK_SECONDS
        self._poll_events(head, top)
        failed: list[str] = []
        # One failing job or game (IPFS down, an RPC hiccup) must not stall the others: each is
        # handled on its own, and the tick reports the failures at the end (the Daemon backs off).
        for key, rec in self.state.all("job").items():
            try:
                status = rec.get("status")
                if status in CHECKING and self.clock() >= rec.get("retry_at", 0):
                    self._check(int(key))
                    status = (self.state.get("job", key) or {}).get("status")
                if status == "mismatch":
                    self._challenge(int(key))
            except Exception as exc:  # noqa: BLE001 - per-job boundary (not only our own errors)
                self._failed(failed, f"job {key}", exc)
        for key, g in self.state.all("game").items():
            if g.get("status") == "open":
                try:
                    self._play(int(key), g)
                except Exception as exc:  # noqa: BLE001 - per-game boundary
                    self._failed(failed, f"game {key}", exc)
        if self.metrics is not None:
            self.metrics.open_games.set(sum(1 for g in self.state.all("game").values() if g.get("status") == "open"))
        if failed:
            raise GpumeshError(f"{len(failed)} handler(s) failed this tick: {', '.join(failed)}")

    def _failed(self, failed: list[str], what: str, exc: Exception) -> None:
        if isinstance(exc, RpcUnavailable):
            raise exc  # the node is down for every job: one line for the tick (Daemon), not one per job
        failed.append(what)
        if self.metrics is not None:
            self.metrics.job_errors.inc()
        what_ = exc if isinstance(exc, GpumeshError) else f"{type(exc).__name__}: {exc}"
        self.log.warning("%s: %s (retrying)", what, what_)

    def run_until_idle(self, max_ticks: int = 500, between: Callable[[], None] | None = None) -> int:
        """Tick until nothing is left to check or play (tests, one-shot runs); returns the ticks."""
        for i in range(max_ticks):
            self.tick()
            if not self.busy():
                return i + 1
            if between is not None:
                between()
        raise GpumeshError(f"the watchtower still has work after {max_ticks} ticks")

    def busy(self) -> bool:
        jobs = self.state.all("job").values()
        games = self.state.all("game").values()
        return any(r.get("status") in (*CHECKING, "mismatch") for r in jobs) or \
            any(g.get("status") == "open" for g in games)

    # ================================================================ discovery
    def _scan_submitted(self) -> None:
        for job in self.market.jobs({JobState.SUBMITTED}):
            self._register(int(job.job_id), None, "scan")

    def _clock_work(self) -> bool:
        """A job whose check or challenge waits on this machine (or a retry time), not on a block."""
        return any(r.get("status") in (*CHECKING, "mismatch") for r in self.state.all("job").values())

    def _poll_events(self, head: int | None = None, top: Head | None = None) -> None:
        if head is not None and (n := self.responder.outbox.recheck(head)) > 0:  # a reorg undid some: again
            self.log.warning("a chain reorg replaced recent blocks; %d transaction(s) of this watchtower sent again", n)
        for ev in self.events.poll(head, top):
            if ev.name == "ResultSubmitted":
                self._register(int(ev.args["jobId"]), str(ev.args["outputsCid"]), f"block {ev.block_number}")
        self.events.commit()

    def _register(self, job_id: int, outputs_cid: str | None, where: str) -> None:
        if self.state.get("job", job_id) is not None:
            return
        # The seed is drawn and stored BEFORE anything runs: a restart checks the same units.
        self.state.put("job", job_id, {"status": "new", "seed": draw_seed(), "outputs_cid": outputs_cid,
                                       "rate": self.config.sample_rate, "attempts": 0})
        self.log.info("job %d: result submitted (%s); queued for checking", job_id, where)

    def _outputs_cid(self, job_id: int, rec: dict) -> str:
        if rec.get("outputs_cid"):
            return rec["outputs_cid"]
        logs = find_logs(self.market.w3, self.market.contract.events.ResultSubmitted, {"jobId": int(job_id)},
                         self.from_block, last_only=True)  # the newest, in bounded spans
        if not logs:
            raise JobDataError(f"job {job_id}: no ResultSubmitted event", retryable=True)
        return str(logs[-1]["args"]["outputsCid"])

    # ================================================================ checking
    def _skip(self, job_id: int, status: str, why: str, level: int = logging.INFO) -> None:
        self.state.update("job", job_id, status=status, reason=why)
        self.log.log(level, "job %d: not checked: %s", job_id, why)
        if self.metrics is not None:
            self.metrics.jobs_checked.labels(status).inc()

    def _check(self, job_id: int) -> None:
        rec = self.state.get("job", job_id) or {}
        job = self.market.get_job(job_id)
        if job.state != JobState.SUBMITTED:
            return self._skip(job_id, "skipped", f"job is {job.state.label}")
        if job.worker.lower() == self.me.lower():
            return self._skip(job_id, "skipped", "our own result")
        if self.game.chain_now() >= job.deadline:
            return self._skip(job_id, "skipped", "the challenge window has closed")
        try:
            ctx, result = self._run_check(job, rec)
        except JobDataError as exc:
            if exc.retryable:
                attempts = rec.get("attempts", 0) + 1
                self.state.update("job", job_id, status="retry", attempts=attempts, reason=str(exc),
                                  retry_at=self.clock() + self.config.retry_seconds)
                self.log.warning("job %d: cannot check yet (attempt %d): %s", job_id, attempts, exc)
                return None
            return self._skip(job_id, "invalid", str(exc), logging.WARNING)
        if self.metrics is not None:
            self.metrics.units_checked.inc(len(result.checked))
            self.metrics.jobs_checked.labels("ok" if result.ok else "mismatch").inc()
        if not result.ok:  # an OK job is final: keep nothing of it (executor, data) in memory
            self._contexts[job_id] = ctx
            self._pin(job_id, ctx.cids)  # the game must not depend on someone else still serving it
        self.state.update("job", job_id, status="ok" if result.ok else "mismatch", check=result.to_json(),
                          line=result.line())
        if result.ok:
            self.log.info("%s", result.line())
            if result.worker_roots is None and self.config.request_data:
                self._request_data(job_id, job, rec["seed"] % job.num_units)
        return None

    def _request_data(self, job_id: int, job, unit: int) -> None:
        """The outputs were withheld: require unit `unit` on-chain (answered: the poster can read
        it from the chain; unanswered: the worker is slashed and we are paid)."""
        gid, late = self._open_game(job_id, f"job:{job_id}:data:{unit}",
                                    self.game.request_data_call(job_id, unit, job.dispute_bond), "data-requested",
                                    kind="data", unit=unit)
        if gid is None:
            self.log.warning("job %d: outputs withheld, but no data request can open: %s", job_id, late)
            return
        self.log.warning("job %d: outputs withheld: data request for unit %d -> game %d", job_id, unit, gid)

    def _open_game(self, job_id: int, intent: str, call, status: str, **fields) -> tuple[int | None, ChainError | None]:
        """Open a game or a data request through the outbox and record it (game state, job `status`).
        (None, error) when the job moved on first (window closed, no longer Submitted)."""
        try:
            res = self.responder.outbox.send(intent, call)
        except ChainError as exc:
            if getattr(exc, "error_name", "") in ("JobMarket_ChallengeWindowClosed", "JobMarket_WrongState"):
                return None, exc
            raise
        self._sent(Sent(intent, res.tx_hash, res.block_number, res.gas_used))
        gid = int(res.event("GameOpened")["gameId"])
        self.state.put("game", gid, {"job_id": job_id, "status": "open", **fields, "opened_block": res.block_number})
        self.state.update("job", job_id, status=status, game_id=gid)
        return gid, None

    def _run_check(self, job, rec: dict, for_game: bool = False) -> tuple[_JobContext, CheckResult]:
        """Fetch, verify and re-execute. `for_game`: rebuilding the context of a game in progress,
        where waiting is not an option: outputs that cannot be read mean a full re-run."""
        jid = int(job.job_id)
        spec_cid = spec_cid_of(self.market, jid, self.from_block)
        data = fetch_job(self.content, job, spec_cid, self.config.limits)
        cids = [spec_cid, data.spec.program_cid, data.spec.inputs_cid]
        ex = self.executor_factory(data.bundle)
        worker_roots: tuple[bytes, ...] | None
        note = ""
        try:
            cids.append(self._outputs_cid(jid, rec))
            raw = read_bounded(self.content, cids[-1], self.config.max_outputs_bytes, "outputs", jid)
            worker_roots = unit_output_roots(verify_outputs(raw, data.bundle.program, job.result_root,
                                                            job.num_units))
        except JobDataError as exc:
            if exc.retryable and rec.get("attempts", 0) < 3 and not for_game:
                raise
            # No usable outputs: re-execute everything and compare the result root itself.
            worker_roots = None
            note = f"outputs unusable: {exc}"
        units = (sample_units(job.num_units, rec.get("rate", self.config.sample_rate), rec["seed"])
                 if worker_roots is not None else tuple(range(job.num_units)))
        outs = ex.run_units(data.units[list(units)]) if units else ()
        own = dict(zip(units, merkle.tensor_roots(np.ascontiguousarray(outs)) if units else (), strict=True))
        if worker_roots is not None:
            bad = mismatches(own, worker_roots)
            leaves = spliced_roots(worker_roots, own)
            differs = False
        else:
            leaves = tuple(own[u] for u in range(job.num_units))
            bad = ()
            differs = merkle.roots_root(list(leaves)) != job.result_root
        ctx = _JobContext(data, ex, leaves, int8_prover(data.bundle, data.units), cids)
        return ctx, CheckResult(jid, job.num_units, units, own, worker_roots, bad, differs,
                                worker_roots is None, note)

    def _pin(self, job_id: int, cids: list[str]) -> None:
        for cid in cids:
            try:
                self.content.pin(cid)
            except GpumeshError as exc:  # serving it is a courtesy; we hold what we fetched
                self.log.warning("job %d: could not pin %s: %s", job_id, cid, exc)
        self.state.update("job", job_id, pinned=list(cids))

    def _context(self, job_id: int) -> _JobContext:
        """The job's game context, rebuilt after a restart by re-running the recorded check."""
        if job_id not in self._contexts:
            rec = self.state.get("job", job_id) or {}
            ctx, _ = self._run_check(self.market.get_job(job_id), rec, for_game=True)
            self._contexts[job_id] = ctx
        return self._contexts[job_id]

    # ================================================================ challenging
    def _challenge(self, job_id: int) -> None:
        rec = self.state.get("job", job_id) or {}
        job = self.market.get_job(job_id)
        if job.state != JobState.SUBMITTED and not self.responder.outbox.live(f"job:{job_id}:challenge")[0]:
            return self._skip(job_id, "skipped", f"mismatch found, but the job is {job.state.label} now")
        gid, late = self._open_game(job_id, f"job:{job_id}:challenge",
                                    self.game.challenge_call(job_id, job.dispute_bond), "challenged")
        if gid is None:
            return self._skip(job_id, "skipped", f"mismatch found, but {late}", logging.WARNING)
        if self.metrics is not None:
            self.metrics.challenges.inc()
        line = rec.get("line", f"job {job_id}: MISMATCH")
        self.log.warning("%s -> game %d", line, gid)
        return None

    # ================================================================ playing
    def _play(self, game_id: int, g: dict) -> None:
        job_id = int(g["job_id"])
        state = self.game.get_game(game_id)
        if state.resolved:
            self.responder.collect(game_id)  # the bond back (won or closed)
            self._collect_slash_reward(game_id, state.outcome)
            if self.responder.finished(game_id):
                self._finish(game_id, job_id, state.outcome)
            return
        ctx = self._context(job_id)
        self.responder.play(game_id, Side.CHALLENGER, ctx.player(self._trace_cache), ctx.prover)

    def _collect_slash_reward(self, game_id: int, outcome: Outcome) -> None:
        """Half the slashed stake is credited in the registry to the earliest game the worker lost
        (docs/protocol.md 4.11): withdraw it if it is ours (nothing to withdraw otherwise)."""
        if outcome != Outcome.CHALLENGER_WON:
            return
        intent = f"game:{game_id}:registry-withdraw"
        entry, _ = self.responder.outbox.live(intent)
        if entry is not None and entry.status == "mined":
            return
        if entry is None and self.registry.info(self.me).credits == 0:
            return
        res = self.responder.outbox.send(intent, self.registry.tx_call("withdraw", context="withdraw(registry credits)"))
        self._sent(Sent(intent, res.tx_hash, res.block_number, res.gas_used))
        self.log.info("game %d: withdrew the slash reward from the registry (tx %s)", game_id, res.tx_hash)

    def _finish(self, game_id: int, job_id: int, outcome: Outcome) -> None:
        data = (self.state.get("game", game_id) or {}).get("kind") == "data"
        status = {Outcome.CHALLENGER_WON: "won", Outcome.WORKER_WON: "answered" if data else "lost"}[outcome]
        reason = self.game.resolutions(game_id)[-1].reason.name.lower()
        self.state.update("game", game_id, status=status, reason=reason)
        self.state.update("job", job_id, status=status)
        ctx = self._contexts.pop(job_id, None)
        if ctx is not None:
            ctx.close()
        if self.metrics is not None:
            self.metrics.games_resolved.labels(status).inc()
        level = logging.ERROR if status == "lost" else logging.INFO
        self.log.log(level, "job %d: game %d resolved: %s (%s)", job_id, game_id, status, reason)

    def _sent(self, sent: Sent) -> None:
        """Account a mined transaction once per intent (a restart may settle it again)."""
        if self.state.get("tx", sent.intent) is not None:
            return
        self.state.put("tx", sent.intent, {"tx": sent.tx_hash, "block": sent.block_number, "gas": sent.gas_used})
        if self.metrics is not None:
            self.metrics.moves.inc()

    # ================================================================ status (CLI)
    def status(self) -> dict:
        return status_of(self.state)


def status_of(state: StateStore) -> dict:
    """What the watchtower has checked and its games, from its state file alone."""
    jobs = {int(k): v for k, v in state.all("job").items()}
    games = {int(k): v for k, v in state.all("game").items()}
    txs = state.all("tx")
    return {"jobs": jobs, "games": games, "transactions": len(txs),
            "gas_used": sum(t["gas"] for t in txs.values())}
