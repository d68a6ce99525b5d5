"""The worker's job handlers: find jobs, decide, validate, claim, execute in resumable chunks,
publish, submit, finalize, withdraw, and defend disputes. One `tick()` moves every job on by what
the chain and the stored state allow; `gpumesh worker run` calls it from a Daemon.

State (StateStore, keyed by on-chain job id): record kind "job" holds the job's status and what was
decided; kind "out:<job>" holds one record per finished unit (its output bytes and root), written
as each unit finishes, so a worker killed mid-job resumes from the first unfinished unit. Every
transaction goes through the daemon's Outbox (gpumesh.node.common.outbox) under a stable intent name. Every handler first reads
the job's on-chain state, so running it twice, or after a crash at any point, is harmless.

Job statuses: new -> claimed -> submitted -> finalized -> done, or a terminal skipped / rejected /
gone (someone else's, cancelled, expired before we claimed) / lost (expired after we claimed) /
slashed.

Everything is injected by the entry point: the chain clients, the signer's outbox, the content
store, the state store, the inventory, the clock, a progress sink and an optional dispute defender.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gpumesh.client.chain.events import EventReader
from gpumesh.client.chain.provider import Head, HeadSource, RpcUnavailable, stats_of
from gpumesh.client.chain.types import Job, JobState, format_eth
from gpumesh.client.core import merkle
from gpumesh.client.core.errors import ChainError, GpumeshError
from gpumesh.client.core.program import result_root
from gpumesh.node.common.cursor import StateCursorStore
from gpumesh.node.common.outbox import Outbox
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute.play import TRACE_CACHE_BYTES, StreamingTraces, TraceCache
from gpumesh.node.jobs.fetch import JobData, JobDataError, JobLimits, ProgramCache, fetch_job, posted_event
from gpumesh.node.jobs.outputs import outputs_bytes
from gpumesh.node.worker.capabilities import capability_document
from gpumesh.node.worker.faults import Fault, executor_for, op_outputs_at, run_units_at, trace_roots_at
from gpumesh.node.worker.inventory import Inventory
from gpumesh.node.worker.policy import GPU_MEMORY, TOO_MANY_UNITS, Policy, Refusal, claim_delay, judge

JOB = "job"
SELF = "self"  # record kind: what this worker is (its capability document, as published)
THROUGHPUT = "throughput"  # record kind: measured seconds per unit, per program root
#: Reverts of claimJob that only mean someone else was faster (the job is no longer Open).
_CLAIM_RACES = ("JobMarket_WrongState", "JobMarket_ClaimDeadlinePassed")
ACTIVE = ("new", "claimed", "submitted", "finalized")


@dataclass(frozen=True)
class WorkerConfig:
    policy: Policy = field(default_factory=Policy)  # acceptance policy: reward, stake ratio, bond, time
    device: str = "cpu"
    chunk_units: int | None = None  # units per step: one stacked execution, one transaction; None: the
    # executor's units per pass (a crash loses at most one step, recomputed identically on resume)
    max_active: int = 1  # jobs claimed and not yet submitted at once
    limits: JobLimits = field(default_factory=JobLimits)
    fetch_attempts: int = 5  # retryable data failures (IPFS unreachable/not found) before giving up
    retry_seconds: float = 5.0
    tick_budget_seconds: float = 2.0  # execution time per tick before other jobs get a turn
    confirmations: int | str = 0  # blocks on top of an event, or 'safe' / 'finalized'
    start_block: int = 0
    trace_cache_bytes: int = TRACE_CACHE_BYTES  # memory for op outputs recomputed while defending (7)
    fault: Fault | None = None  # TEST TOOL: corrupt one element (gpumesh.node.worker.faults)
    unit_delay: float = 0.0  # TEST TOOL: sleep after each unit (lets tests kill mid-job)
    claim_stagger: float = 2.0  # seconds a worker that needs all of a job's time waits before claiming
    # it; one that needs a tenth waits a tenth of it (policy.claim_delay): faster machines claim first
    program_cache_bytes: int = 2 << 30  # validated program folders kept across jobs (weights' bytes)
    idle_full_tick_seconds: float = 30.0  # a full tick at least this often even when no block came


class Progress(Protocol):
    def start(self, job_id: int, total: int, done: int) -> None: ...
    def advance(self, job_id: int, done: int) -> None: ...
    def finish(self, job_id: int) -> None: ...


class NoProgress:
    def start(self, job_id: int, total: int, done: int) -> None:
        pass

    def advance(self, job_id: int, done: int) -> None:
        pass

    def finish(self, job_id: int) -> None:
        pass


class Defender(Protocol):
    """Plays the worker's side of every open dispute game of a job (gpumesh.node.worker.defend)."""

    def defend(self, job_id: int, data: JobData, unit_roots: tuple[bytes, ...],
               trace: Callable[[int], Any],  # trace(u): a (streaming) UnitTrace
               unit_output: Callable[[int], bytes] | None = None) -> None: ...  # answers data requests


class WorkerNode:
    METRICS_SECONDS = 30.0  # the stake and balance gauges are read at most this often
    def __init__(self, *, market, registry, outbox: Outbox, store, state: StateStore,
                 config: WorkerConfig, inventory: Inventory, defender: Defender | None = None,
                 progress: Progress | None = None, metrics=None, stopping: Callable[[], bool] = lambda: False,
                 log: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic,
                 trace_cache: TraceCache | None = None) -> None:
        self.market, self.registry, self.outbox = market, registry, outbox
        self.store, self.state, self.cfg, self.inventory = store, state, config, inventory
        self.defender = defender
        self.progress = progress or NoProgress()
        self.metrics = metrics
        self.stopping = stopping
        self.log = log or logging.getLogger("gpumesh.worker")
        self.clock = clock
        self.me = outbox.address
        self._data: dict[int, JobData] = {}
        self._executors: dict[str, Any] = {}  # program CID -> executor (shared by that program's jobs)
        self._programs = ProgramCache(config.program_cache_bytes)  # validated once per program, not per job
        self._claim_at: dict[int, float] = {}  # job -> clock time of its claim (claim_stagger)
        self._resumed: set[int] = set()  # jobs this process has executed (resumed) at least once
        # disputed units' streaming traces (roots only) per job; recomputed op outputs and tensor
        # trees in one bounded LRU shared by every job (docs/protocol.md 7, streaming defence)
        self._traces: dict[int, StreamingTraces] = {}
        self._trace_cache = trace_cache if trace_cache is not None else TraceCache(config.trace_cache_bytes)
        self._events = EventReader(market.w3, [market.contract], StateCursorStore(state, "market"),
                                   start_block=config.start_block, confirmations=config.confirmations)
        self._started = False
        # Idle ticks cost one eth_blockNumber over HTTP and nothing over a websocket (newHeads): a
        # tick with the same head and nothing waiting on the clock does nothing else.
        self._heads = HeadSource(market.w3)
        self._last_head: Head | None = None
        self._full_tick_at = 0.0
        self._now: int | None = None
        self._price: int | None = None
        self._free: int | None = None
        self._read: dict[int, tuple[float, Job]] = {}  # the tick's batched getJob reads (monotonic time, job)
        self._queue: list[int] = []  # the tick's open jobs, in this worker's order
        self._claimed_n: int | None = None
        self._metrics_at = 0.0
        if metrics is not None and hasattr(metrics, "rpc"):
            metrics.rpc(stats_of(market.w3))  # requests and transport errors, live at each scrape
        self._unit_seconds: dict[bytes, float] = {}  # program root -> measured seconds per unit

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> None:
        """Settle the outbox, publish the capability document, and scan the Open jobs."""
        from gpumesh.node.runtime import kernels

        # the first call imports torch's compiler stack (~2 s of CPU once per process): here, not
        # in the first job's path (the executor calls it again, at no cost)
        kernels.set_deterministic()
        n = len(self.outbox.flush())
        if n:
            self.log.info("settled %d transaction(s) recorded before a restart", n)
        self.publish_capabilities()
        for j in self.market.jobs({JobState.OPEN}):
            self._note_job(j.job_id, None)
        active = {k: v["status"] for k, v in self.state.all(JOB).items() if v["status"] in ACTIVE}
        self.log.info("worker %s started on %s; %d job(s) in progress or to consider", self.me,
                      self.cfg.device, len(active))
        self._started = True

    def publish_capabilities(self) -> str:
        doc = capability_document(self.inventory, self.cfg.device, self.cfg.limits)
        cid = self.store.add_bytes(doc)
        self.state.put(SELF, "capabilities", {**json.loads(doc), "cid": cid})  # for `worker status`
        if self.registry.info(self.me).capabilities_cid != cid:
            self.outbox.send(f"capabilities:{cid}", self.registry.tx_call("setCapabilities", cid))
            self.log.info("published capabilities %s", cid)
        return cid

    def tick(self) -> None:
        if not self._started:
            self.startup()
        top = self._heads.head()
        head = top.number
        jobs = self.state.all(JOB)
        if top == self._last_head and not self._clock_work(jobs) and self.clock() < self._full_tick_at:
            return  # nothing on chain moved and nothing here waits on the clock: one request, or none
        self._last_head, self._full_tick_at = top, self.clock() + self.cfg.idle_full_tick_seconds
        if (n := self.outbox.recheck(head, top=top)) > 0:  # a reorg replaced blocks we acted in: same bytes again
            self._count("reorgs_seen")
            self.log.warning("a chain reorg replaced recent blocks; %d transaction(s) of this worker sent again", n)
        for ev in self._events.poll(head, top):
            if ev.name == "JobPosted":
                self._note_job(ev.args["jobId"], ev.args)
            elif ev.name == "JobReopened":
                self._reopened(int(ev.args["jobId"]), str(ev.args["worker"]))
        self._events.commit()
        jobs = self.state.all(JOB)
        self._report(jobs)
        failed: list[int] = []
        self._now, self._price, self._free = top.timestamp, None, None  # the chain's time (the head's), gas
        # price and free stake: read at most once a tick
        order = sorted(jobs, key=lambda k: self._order(k, jobs[k]))
        # one batch for the jobs this worker holds and the first open ones in its order; the later
        # open ones are read a chunk at a time when it gets to them (_read_new)
        self._queue = [int(k) for k in order if jobs[k]["status"] == "new"]
        self._read, self._claimed_n = {}, None
        self._read_jobs([int(k) for k in order if jobs[k]["status"] in ACTIVE and jobs[k]["status"] != "new"]
                        + self._queue[:self.NEW_READ_CHUNK])
        for key in order:
            if self.stopping():
                break
            if jobs[key]["status"] in ACTIVE:
                # one job's failure (RPC hiccup, unreachable data, a bug) must not stop the defence
                # of the later jobs: log it, count it, go on; the job is retried next tick
                try:
                    self._advance(int(key))
                except RpcUnavailable:
                    raise  # the node is down for every job: one line for the tick (Daemon), not one per job
                except Exception as exc:  # noqa: BLE001 - per-job boundary; reported below
                    failed.append(int(key))
                    self._count("job_errors")
                    what = exc if isinstance(exc, GpumeshError) else f"{type(exc).__name__}: {exc}"
                    self.log.warning("job %s: %s (retrying next tick)", key, what)
        if failed:  # the Daemon backs off as it did when the first failure ended the tick
            raise GpumeshError(f"{len(failed)} job(s) failed this tick: {', '.join(map(str, failed))}")

    # ------------------------------------------------------------------ bookkeeping
    def _note_job(self, job_id: int, posted: dict | None) -> None:
        if self.state.get(JOB, job_id) is not None:
            return
        rec: dict[str, Any] = {"status": "new", "attempts": 0, "next_try": 0.0}
        if posted is not None:
            rec.update(spec_cid=posted["specCid"], min_gpu_mib=int(posted["minGpuMemoryMiB"]))
        self.state.put(JOB, job_id, rec)
        self._count("jobs_seen")

    def _order(self, key: str, rec: dict) -> tuple[int, int, bytes]:
        """The order of a tick's jobs: the ones this worker holds first, in id order (their defence
        and deadlines come before new work), then the open ones in an order of this worker's own (keccak of its
        address and the job id). Every worker walking the open jobs in id order would claim the same
        job in the same block and all but one would revert (the scale bench measured 12 reverted
        claims per won claim, one claim won per block across 16 workers); own orders spread them."""
        if rec.get("status") != "new":
            return (0, int(key), b"")  # held jobs in id order
        return (1, 0, merkle.keccak256(bytes.fromhex(str(self.me)[2:]) + int(key).to_bytes(32, "big")))

    def _reopened(self, job_id: int, previous: str) -> None:
        """A claimed job (a shard, say) whose worker missed its execution deadline is Open again
        (JobReopened): a job this worker saw taken becomes a candidate again; if the late worker
        was this one, its claim is over (the burn is already taken) and the job is considered anew."""
        rec = self.state.get(JOB, job_id)
        if rec is None:
            return self._note_job(job_id, None)
        mine = previous.lower() == str(self.me).lower()
        if rec["status"] == "gone" or (mine and rec["status"] == "claimed"):
            if mine:
                self.log.warning("job %d: this worker missed its execution deadline; the job was re-opened", job_id)
                self._forget_traces(job_id)
            self._forget(job_id)
            self._set(job_id, status="new", attempts=0, next_try=0.0)
            self._count("jobs_reopened")

    def _set(self, job_id: int, **changes: Any) -> dict[str, Any]:
        if "status" in changes:
            self._claimed_n = None
        return self.state.update(JOB, job_id, **changes)

    def _end(self, job_id: int, status: str, why: str, level: int = logging.INFO) -> None:
        self.log.log(level, "job %d: %s: %s", job_id, status, why)
        self._set(job_id, status=status, reason=why)
        self._forget(job_id)
        self._count(f"jobs_{status}")

    def _forget(self, job_id: int) -> None:
        self._claim_at.pop(job_id, None)
        data = self._data.pop(job_id, None)
        if data is not None and all(d.spec.program_cid != data.spec.program_cid for d in self._data.values()):
            self._executors.pop(data.spec.program_cid, None)  # no other job of ours runs this program
        self._forget_traces(job_id)

    def _forget_traces(self, job_id: int) -> None:
        traces = self._traces.pop(job_id, None)
        if traces is not None:
            traces.close()

    def _count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.inc(name, n)

    def _chain_now(self) -> int:
        if self._now is None:
            self._now = int(self.market.w3.eth.get_block("latest")["timestamp"])
        return self._now

    def _report(self, jobs: dict[str, dict]) -> None:
        """The metrics' gauges, at most every METRICS_SECONDS (stake and balance cost requests)."""
        if self.metrics is None or not hasattr(self.metrics, "observe") or self.clock() < self._metrics_at:
            return
        self._metrics_at = self.clock() + self.METRICS_SECONDS
        si = self.registry.info(self.me)
        self.metrics.observe(stake_wei=si.total, free_stake_wei=si.free, locked_stake_wei=si.locked,
                             balance_wei=int(self.market.w3.eth.get_balance(self.me)),
                             active_jobs=sum(1 for v in jobs.values() if v["status"] in ("claimed", "submitted",
                                                                                         "finalized")),
                             outbox_depth=len(self.state.outbox_pending()))

    def _clock_work(self, jobs: dict[str, dict]) -> bool:
        """Whether some job moves on without a new block: one executing or withdrawing, one waiting
        out its claim stagger or a data retry."""
        return any(v["status"] in ("claimed", "finalized") or
                   (v["status"] == "new" and (int(k) in self._claim_at or v.get("attempts", 0) > 0))
                   for k, v in jobs.items())

    # ------------------------------------------------------------------ the state machine
    #: How long the tick's batched getJob read stands for the chain's state: a handler that ran
    #: longer (it downloaded, measured, executed or sent a transaction) reads its job again.
    READ_FRESH_SECONDS = 0.5

    #: Open jobs read per batch, in this worker's order: a free worker claims one of the first
    #: few, a busy one reads none, so a market with hundreds of open shards costs a handful of calls.
    NEW_READ_CHUNK = 8

    def _read_jobs(self, ids: list[int]) -> None:
        """getJob of `ids` in one batch into the tick's reads (each with its time); a batch that
        fails leaves them out, so each job reads itself and fails alone (the per-job boundary)."""
        if not ids:
            return
        try:
            got = self.market.get_jobs(ids)
        except RpcUnavailable:
            raise
        except Exception:  # noqa: BLE001 - see above
            return
        at = time.monotonic()
        self._read.update({i: (at, j) for i, j in got.items()})

    def _job(self, job_id: int) -> Job:
        """The job's on-chain state: the tick's batched read while it is fresh, else one getJob."""
        at, job = self._read.get(job_id, (0.0, None))
        if job is not None and time.monotonic() - at <= self.READ_FRESH_SECONDS:
            return job
        return self.market.get_job(job_id)

    def _claimed(self) -> int:
        """Jobs claimed and not yet submitted (cached until a job's status changes)."""
        if self._claimed_n is None:
            self._claimed_n = sum(1 for v in self.state.all(JOB).values() if v["status"] == "claimed")
        return self._claimed_n

    def _advance(self, job_id: int) -> None:
        rec = self.state.get(JOB, job_id) or {}
        status = rec["status"]
        if status == "new":
            if self._claimed() >= self.cfg.max_active and self.outbox.live(f"claim:job:{job_id}")[0] is None:
                return None  # nothing to decide until a running job is submitted (a claim sent
                # before a crash is looked at: the job may be ours)
            if job_id not in self._read and job_id in self._queue:  # the next chunk of open jobs
                i = self._queue.index(job_id)
                self._read_jobs(self._queue[i:i + self.NEW_READ_CHUNK])
        # A job still to consider may go by the tick's read however old: _consider acts on it only
        # after a fresh read (before its download and its claim); one this worker holds is read
        # fresh (it may send a transaction).
        job = self._read[job_id][1] if status == "new" and job_id in self._read else self._job(job_id)
        if status == "new":
            self._consider(job, rec)
        elif status == "claimed":
            self._execute(job, rec)
        elif status == "submitted":
            self._after_submit(job, rec)
        elif status == "finalized":
            self._withdraw(job)

    def _consider(self, job: Job, rec: dict) -> None:
        jid = job.job_id
        if job.state == JobState.CLAIMED and job.worker == self.me:  # claimed, then crashed
            self._set(jid, status="claimed")
            return self._execute(job, self.state.get(JOB, jid))
        if job.state != JobState.OPEN:
            return self._end(jid, "gone", f"the job is {job.state.label}")
        if self.clock() < rec.get("next_try", 0.0):
            return None
        if self._now_past(job.deadline):
            return self._end(jid, "gone", "its claim deadline passed")
        refusal = self._cannot_run(job, rec)
        if refusal is not None:
            return self._refuse(jid, refusal)
        if self._claimed() >= self.cfg.max_active:
            return None  # considered again once a running job is submitted
        if self._free is None:  # changes only with this worker's own claims (which reset it)
            self._free = self.registry.free_stake(self.me)
        free = self._free
        if free < job.required_stake:
            self._set(jid, next_try=self.clock() + self.cfg.retry_seconds)
            if not rec.get("stake_noted"):
                self._set(jid, stake_noted=True)
                self.log.info("job %d: waiting: needs %s free stake, this worker has %s", jid,
                              format_eth(job.required_stake), format_eth(free))
            return None
        if jid not in self._data:  # about to download: on the chain's state now, not the tick's
            job = self._job(jid)
            if job.state != JobState.OPEN:
                return self._end(jid, "gone", f"another worker claimed it first ({job.state.label})")
        data = self._load(job, rec)
        if data is None:
            return None
        rec = self.state.get(JOB, jid)  # _load may have filled in the event's fields
        min_mib = max(rec.get("min_gpu_mib", 0), data.spec.min_gpu_memory_mib)
        if (why := self._memory_short(min_mib)) is not None:
            return self._refuse(jid, Refusal(GPU_MEMORY, why))
        estimate = self._estimate(job, data)
        self._set(jid, estimate_s=estimate)
        refusal = judge(job, estimate, self._gas_price(), self.cfg.policy, backlog=self._backlog(jid))
        if refusal is not None:
            return self._refuse(jid, refusal)
        # Preference without coordination: a worker waits before claiming in proportion to the share
        # of the job's executionTime it needs, so a machine that runs it in a tenth of the time
        # claims first and a slower one finds it taken on its re-read below (docs/roles/worker.md).
        at = self._claim_at.setdefault(jid, self.clock() + claim_delay(self.cfg.claim_stagger, job, estimate,
                                                                         self.cfg.policy))
        if self.clock() < at:
            return None
        # Another worker may have claimed it while we validated or waited: read the chain again
        # rather than send a claim that can only revert, and take a race lost at the estimate as
        # news, not failure. The tick's batched read counts as current while it is fresh (nothing
        # slow ran since: no download, no measurement); the claim's gas estimate would still stop
        # a claim of a job taken in between before anything is signed.
        now = self._job(jid)
        if now.state != JobState.OPEN:
            return self._end(jid, "gone", f"another worker claimed it first ({now.state.label})")
        for cid in (rec["spec_cid"], data.spec.program_cid, data.spec.inputs_cid):
            self.store.pin(cid)  # keep the data while we may have to prove our work
        self._free = None
        try:
            res = self.outbox.send(f"claim:job:{jid}", self.market.tx_call("claimJob", jid))
        except ChainError as exc:
            if getattr(exc, "error_name", "") in _CLAIM_RACES:
                return self._end(jid, "gone", f"lost the claim race: {exc}")
            raise
        self._set(jid, status="claimed", claim_tx=res.tx_hash)
        self._count("jobs_claimed")
        self.log.info("job %d: claimed (%s reward, %s stake locked, %d units)", jid, format_eth(job.reward),
                      format_eth(job.required_stake), job.num_units)
        return self._execute(self.market.get_job(jid), self.state.get(JOB, jid))

    def _now_past(self, deadline: int) -> bool:
        return self._chain_now() > deadline

    def _cannot_run(self, job: Job, rec: dict) -> Refusal | None:
        """What rules the job out before its data is downloaded: limits, GPU memory, and the policy's
        reward, stake-ratio and bond rules (the time rules need the data: `_estimate`)."""
        if job.num_units > self.cfg.limits.max_units:
            return Refusal(TOO_MANY_UNITS, f"{job.num_units} units, over this worker's limit of "
                                           f"{self.cfg.limits.max_units}")
        if (why := self._memory_short(rec.get("min_gpu_mib", 0))) is not None:
            return Refusal(GPU_MEMORY, why)
        return judge(job, None, self._gas_price(), self.cfg.policy)

    def _refuse(self, job_id: int, refusal: Refusal) -> None:
        """A job this worker will not claim: one INFO line, status "skipped" with the reason key
        (`refusal`) and text (`reason`) in its record, counted as jobs_refused_<reason>."""
        self._set(job_id, refusal=refusal.reason)
        self._count(f"jobs_refused_{refusal.reason}")
        self._end(job_id, "skipped", refusal.detail)

    def _gas_price(self) -> int:
        """Wei per gas for the bond rule: the configured price, else the node's eth_gasPrice (read
        at most once per tick)."""
        configured = self.cfg.policy.gas_price
        if configured is not None:
            return configured
        if self._price is None:
            self._price = int(self.market.w3.eth.gas_price)
        return self._price

    def _estimate(self, job: Job, data: JobData) -> float:
        """Seconds this machine needs for all of the job's units: one timed stacked pass of the
        job's program on this worker's executor (per program root, measured once per process),
        times the unit count, plus the TEST TOOL unit delay."""
        per_unit = self._unit_seconds.get(job.program_root)
        if per_unit is None:
            ex = self._executor(job.job_id, data)
            n = max(1, min(ex.stack, job.num_units))
            t0 = time.perf_counter()
            ex.run_units(data.units[:n])
            per_unit = (time.perf_counter() - t0) / n
            self._unit_seconds[job.program_root] = per_unit
            self.state.put(THROUGHPUT, job.program_root.hex(), {
                "device": self.cfg.device, "seconds_per_unit": per_unit, "stack": n,
                "units_per_second": 1.0 / max(per_unit, 1e-9), "program_cid": data.spec.program_cid})
            self.log.info("job %d: measured %.3gs per unit on %s (%d unit(s) in one pass)", job.job_id, per_unit,
                          self.cfg.device, n)
        return (per_unit + self.cfg.unit_delay) * job.num_units

    def _backlog(self, job_id: int) -> float:
        """Estimated seconds of work in the jobs already claimed (each job's whole estimate: an upper
        bound); they share the executor with a new claim tick by tick."""
        return sum(float(v.get("estimate_s", 0.0)) for k, v in self.state.all(JOB).items()
                   if v["status"] == "claimed" and int(k) != job_id)

    def _memory_short(self, min_mib: int) -> str | None:
        if min_mib <= 0:
            return None
        if self.cfg.device == "cpu":
            return f"needs a GPU with {min_mib} MiB; this worker runs on the CPU"
        have = self.inventory.max_gpu_memory_mib
        return None if have >= min_mib else f"needs {min_mib} MiB of GPU memory, this worker's GPU has {have}"

    def _load(self, job: Job, rec: dict) -> JobData | None:
        """The job's validated data (cached), or None after recording why not."""
        jid = job.job_id
        if jid in self._data:
            return self._data[jid]
        try:
            if "spec_cid" not in rec:
                ev = posted_event(self.market, jid, self.cfg.start_block)
                rec = self._set(jid, spec_cid=ev["specCid"], min_gpu_mib=int(ev["minGpuMemoryMiB"]))
            data = fetch_job(self.store, job, rec["spec_cid"], self.cfg.limits, self._programs)
        except JobDataError as exc:
            attempts = rec.get("attempts", 0) + 1
            if exc.retryable and attempts < self.cfg.fetch_attempts and rec["status"] == "new":
                self._set(jid, attempts=attempts, next_try=self.clock() + self.cfg.retry_seconds * attempts)
                self.log.warning("job %d: data not available yet (try %d of %d): %s", jid, attempts,
                                 self.cfg.fetch_attempts, exc)
                return None
            if rec["status"] == "new":
                self._end(jid, "rejected", f"not claiming: {exc}", logging.WARNING)
                return None
            raise  # our own claimed job: keep retrying (the daemon backs off), never drop it
        self.log.info("job %d: validated: program %s (root 0x%s), inputs %s (root 0x%s), %d units", jid,
                      data.spec.program_cid, job.program_root.hex()[:16], data.spec.inputs_cid,
                      job.inputs_root.hex()[:16], job.num_units)
        self._data[jid] = data
        return data

    def _executor(self, jid: int, data: JobData):
        """The executor of the job's program (one per program CID: the same bundle, so the same
        weights on the device, for every job of that program)."""
        key = data.spec.program_cid
        if key not in self._executors:
            self._executors[key] = executor_for(data.bundle, self.cfg.device, self.cfg.fault)
        return self._executors[key]

    def _unit_records(self, jid: int) -> dict[int, dict]:
        return {int(k): v for k, v in self.state.all(f"out:{jid}").items()}

    def _execute(self, job: Job, rec: dict) -> None:
        jid = job.job_id
        if job.state == JobState.SUBMITTED and job.worker == self.me:  # submitted, then crashed
            self._set(jid, status="submitted")
            return None
        if job.state != JobState.CLAIMED or job.worker != self.me:
            return self._end(jid, "lost", f"the job is {job.state.label} (worker {job.worker})", logging.WARNING)
        if self._now_past(job.deadline):
            return self._end(jid, "lost", "its execution deadline passed before we submitted", logging.WARNING)
        data = self._load(job, rec)
        if data is None:
            return None
        done = self._unit_records(jid)
        total = job.num_units
        nxt = next((u for u in range(total) if u not in done), total)
        if nxt < total:
            self._run_units(jid, data, done, nxt, total)
            done = self._unit_records(jid)
            if len(done) < total:
                return None  # the next tick goes on
        return self._submit(job, data, done)

    def _run_units(self, jid: int, data: JobData, done: dict, nxt: int, total: int) -> None:
        if done and jid not in self._resumed:  # once per job and process: after a restart, not every tick
            self.log.info("job %d: resuming at unit %d/%d (%d unit(s) already stored)", jid, nxt, total, len(done))
        self._resumed.add(jid)
        ex = self._executor(jid, data)
        self.progress.start(jid, total, len(done))
        t_end = self.clock() + self.cfg.tick_budget_seconds
        count = len(done)
        u = nxt
        step = self.cfg.chunk_units or ex.stack  # a stacked pass is cheap by construction (2.5)
        while u < total and not self.stopping():
            todo = [v for v in range(u, min(u + step, total)) if v not in done]
            outs = run_units_at(ex, todo, data.units[todo]) if todo else ()
            raws = [np.ascontiguousarray(out).tobytes() for out in outs]
            roots = merkle.tensor_roots(np.ascontiguousarray(outs)) if todo else []
            # one transaction per step: a commit (an fsync) per unit would cost far more than a
            # small unit's execution
            self.state.put_many(f"out:{jid}", [(f"{v:08d}", {"root": root.hex(), "out": base64.b64encode(raw).decode()})
                                               for v, raw, root in zip(todo, raws, roots, strict=True)])
            for _ in todo:
                count += 1
                self._count("units_executed")
                self.progress.advance(jid, count)
                if self.cfg.unit_delay:
                    time.sleep(self.cfg.unit_delay)
            u = min(u + step, total)
            if self.clock() >= t_end:
                break
        if count >= total:
            self.progress.finish(jid)

    def _submit(self, job: Job, data: JobData, done: dict) -> None:
        jid = job.job_id
        out_t = data.bundle.program.output_type
        from gpumesh.node.runtime.files import NP_DTYPE

        outs = np.stack([np.frombuffer(base64.b64decode(done[u]["out"]), dtype=NP_DTYPE[out_t.dtype])
                         .reshape(out_t.shape) for u in range(job.num_units)])
        roots = [bytes.fromhex(done[u]["root"]) for u in range(job.num_units)]
        rr = result_root(roots)
        cid = self.store.add_bytes(outputs_bytes(outs))  # same bytes, same CID: safe to redo
        self._set(jid, result_root=rr.hex(), outputs_cid=cid)
        self.log.info("job %d: executed %d units, result root 0x%s, outputs %s", jid, job.num_units, rr.hex(), cid)
        res = self.outbox.send(f"submit:job:{jid}", self.market.tx_call("submitResult", jid, rr, cid))
        self._set(jid, status="submitted", submit_tx=res.tx_hash)
        self._count("jobs_submitted")
        self.log.info("job %d: submitted (tx %s)", jid, res.tx_hash)

    def _after_submit(self, job: Job, rec: dict) -> None:
        jid = job.job_id
        if job.state == JobState.SLASHED:
            return self._end(jid, "slashed", "a dispute game found our result wrong", logging.ERROR)
        if job.state == JobState.FINALIZED:
            self._set(jid, status="finalized")
            return self._withdraw(job)
        if job.state != JobState.SUBMITTED:
            entry, _ = self.outbox.live(f"submit:job:{jid}")
            if job.state in (JobState.OPEN, JobState.CLAIMED) and entry is not None and entry.status == "pending":
                return None  # our claim/submit were reorged out and are being mined again
            return self._end(jid, "lost", f"the job is {job.state.label}", logging.WARNING)
        if job.open_disputes > 0 or rec.get("disputed"):
            if not rec.get("disputed"):
                self._set(jid, disputed=True)
                self.log.warning("job %d: disputed (%d open game(s)); defending", jid, job.open_disputes)
            self._defend(job, rec)
            job = self.market.get_job(jid)
        if job.state != JobState.SUBMITTED or job.open_disputes > 0:
            return None  # a game is still running (or just ended the job: the next tick sees it)
        if self._chain_now() >= job.deadline:
            self.outbox.send(f"finalize:job:{jid}", self.market.tx_call("finalizeJob", jid))
            self.log.info("job %d: finalized after its challenge window", jid)
            self._set(jid, status="finalized")
            return self._withdraw(self.market.get_job(jid))
        return None

    def _defend(self, job: Job, rec: dict) -> None:
        jid = job.job_id
        if self.defender is None:
            self.log.error("job %d: disputed, but this worker has no dispute defender configured", jid)
            return
        data = self._load(job, rec)
        if data is None:
            return
        done = self._unit_records(jid)
        roots = tuple(bytes.fromhex(done[u]["root"]) for u in range(job.num_units))
        if jid not in self._traces:
            ex = self._executor(jid, data)

            def trace_roots(u: int) -> list[bytes]:
                self.log.info("job %d: re-executing unit %d in streaming trace mode for the dispute", jid, u)
                return trace_roots_at(ex, u, data.units[u])

            self._traces[jid] = StreamingTraces(trace_roots, lambda u, ops: op_outputs_at(ex, u, data.units[u], ops),
                                                self._trace_cache, jid)
        self.defender.defend(jid, data, roots, self._traces[jid],
                             unit_output=lambda u: base64.b64decode(done[u]["out"]))
        if self.market.get_job(jid).open_disputes == 0:
            self._forget_traces(jid)  # its games ended: drop the roots and the cached op outputs

    def _withdraw(self, job: Job) -> None:
        jid = job.job_id
        credits = self.market.credits(self.me)
        if credits > 0:
            self.outbox.send(f"withdraw:after-job:{jid}", self.market.tx_call("withdraw"))
            self.log.info("job %d: paid; withdrew %s", jid, format_eth(credits))
            self._count("withdrawals")
        self._end(jid, "done", f"finalized, reward {format_eth(job.reward)}")
