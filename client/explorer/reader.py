"""The explorer's data layer: reads one deployment through the chain adapters of gpumesh.client.chain
(JobMarketClient, WorkerRegistryClient, DisputeGameClient views; EventReader for the events) and the
job spec documents through an IPFS store, and answers in JSON-ready dicts.

`Explorer.sync()` feeds the new events into a ChainIndex (gpumesh.client.explorer.index) and returns
whether the chain head moved; views (getJob, stakeOf, getGame) are read fresh and cached per head
block; per-transaction facts (sender, entry point, gas, block time) and spec documents are cached
forever (immutable once mined / content-addressed). One lock serializes access, so the HTTP layer
may call it from any thread. Amounts are decimal strings of wei with an ETH rendering (wei exceed
JavaScript's safe integers); times are unix seconds of the chain, with the head's time as `now`.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient
from gpumesh.client.chain.dispute import DisputeGameClient
from gpumesh.client.chain.events import EventReader, MemoryCursorStore
from gpumesh.client.chain.types import JobState
from gpumesh.client.core.errors import UsageError
from gpumesh.client.explorer.games import TxInfo, game_story, op_label
from gpumesh.client.explorer.index import ChainIndex, GameFacts, JobFacts

#: Largest job spec document read from IPFS (the documents are a few hundred bytes; the CID is untrusted).
SPEC_MAX_BYTES = 1 << 20
#: Meta values longer than this (e.g. a list of labels) are summarized, not shown.
META_MAX_CHARS = 120


def amount(wei: int) -> dict[str, str]:
    return {"wei": str(int(wei)), "eth": f"{(Decimal(int(wei)) / Decimal(10**18)).normalize():f}"}


def hex0x(b: bytes) -> str:
    return "0x" + bytes(b).hex()


class NotFound(UsageError):
    """A job, game, worker or watchtower this deployment does not have."""


class Explorer:
    def __init__(self, w3, deployment, store=None, confirmations: int = 0, gateway: str | None = None,
                 network: str = "") -> None:
        self.w3, self.deployment, self.store = w3, deployment, store
        self.network, self.gateway = network, (gateway or "").rstrip("/")
        self.market = JobMarketClient(w3, deployment.market)
        self.registry = WorkerRegistryClient(w3, deployment.registry)
        self.game = DisputeGameClient(w3, deployment.dispute_game, from_block=deployment.deploy_block)
        self.index = ChainIndex(self.market.address, self.registry.address, self.game.address)
        self.events = EventReader(w3, [self.market.contract, self.registry.contract, self.game.contract],
                                  MemoryCursorStore(), start_block=deployment.deploy_block,
                                  confirmations=confirmations)
        self.chain_id = int(w3.eth.chain_id)
        self._lock = threading.RLock()
        self._times: dict[int, int] = {}
        self._txs: dict[str, TxInfo] = {}
        self._specs: dict[str, dict[str, Any]] = {}
        self._views: dict[tuple, Any] = {}
        self._clock_seconds: int | None = None
        self.head_time = 0

    # ---------------------------------------------------------------- following the chain
    def sync(self, max_polls: int = 1000) -> bool:
        """Read every new event up to the head; True when the head moved (the page should refresh)."""
        with self._lock:
            before = self.index.head
            for _ in range(max_polls):
                evs = self.events.poll()
                self.index.apply(evs)
                self.events.commit()
                cur = self.events.store.load()
                if cur is None or cur.block >= self.w3.eth.block_number - self.events.confirmations:
                    break
            cur = self.events.store.load()
            head = cur.block if cur is not None else int(self.w3.eth.block_number)
            if head != before:
                self.index.head = head
                self.head_time = self._time(head)
                self._views.clear()
            return head != before

    def _time(self, block: int) -> int:
        if block not in self._times:
            self._times[block] = int(self.w3.eth.get_block(block)["timestamp"])
        return self._times[block]

    def _view(self, key: tuple, fn):
        if key not in self._views:
            self._views[key] = fn()
        return self._views[key]

    def _tx(self, tx_hash: str) -> TxInfo:
        if tx_hash not in self._txs:
            tx = self.w3.eth.get_transaction(tx_hash)
            rc = self.w3.eth.get_transaction_receipt(tx_hash)
            fn, args = "", {}
            try:
                f, a = self.game.contract.decode_function_input(tx["input"])
                fn, args = f.fn_name, {k: v for k, v in a.items() if isinstance(v, int | str)}
            except Exception:  # noqa: BLE001 - a move sent through another contract: events still tell it
                pass
            self._txs[tx_hash] = TxInfo(tx_hash, int(rc["blockNumber"]), self._time(int(rc["blockNumber"])),
                                        str(tx["from"]), fn, args, int(rc["gasUsed"]))
        return self._txs[tx_hash]

    def _event(self, ev) -> dict[str, Any]:
        args = {}
        for k, v in ev.args.items():
            if isinstance(v, bytes | bytearray):
                v = hex0x(v) if len(v) <= 64 else f"{len(v):,} bytes"
            elif isinstance(v, list | tuple):
                v = f"{len(v)} items"
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**53:
                v = str(v)
            args[k] = v
        return {"event": ev.name, "block": ev.block_number, "time": self._time(ev.block_number),
                "tx": ev.tx_hash, "args": args}

    # ---------------------------------------------------------------- overview
    def overview(self) -> dict[str, Any]:
        with self._lock:
            ix = self.index
            return {"network": self.network, "chain_id": self.chain_id, "head": ix.head, "now": self.head_time,
                    "confirmations": self.events.confirmations, "events": ix.events_seen,
                    "contracts": {"market": self.market.address, "registry": self.registry.address,
                                  "dispute_game": self.game.address},
                    "deploy_block": self.deployment.deploy_block,
                    "counts": {"jobs": len(ix.jobs), "workers": len(ix.workers), "watchtowers": len(ix.towers),
                               "games": len(ix.games)},
                    "ipfs": self.store is not None}

    # ---------------------------------------------------------------- jobs
    def _job_view(self, job_id: int):
        return self._view(("job", job_id), lambda: self.market.get_job(job_id))

    def _job_row(self, f: JobFacts) -> dict[str, Any]:
        j = self._job_view(f.job_id)
        deadlines = {"claim": j.deadline if j.state == JobState.OPEN else None,
                     "execution": f.execution_deadline or None, "challenge": f.challenge_deadline or None}
        return {"id": f.job_id, "state": j.state.label, "poster": j.poster, "reward": amount(j.reward),
                "required_stake": amount(j.required_stake), "dispute_bond": amount(j.dispute_bond),
                "units": j.num_units, "worker": None if int(j.worker, 16) == 0 else j.worker,
                "deadline": j.deadline, "deadlines": deadlines, "open_disputes": j.open_disputes,
                "result_root": None if not any(j.result_root) else hex0x(j.result_root),
                "outputs_cid": f.outputs_cid or None, "outputs_url": self.ipfs_url(f.outputs_cid, "outputs.safetensors"),
                "spec_cid": f.spec_cid, "games": list(f.games), "posted_block": f.posted_block,
                "posted_time": self._time(f.posted_block) if f.posted_block else None}

    def jobs(self, state: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        with self._lock:
            ids = sorted(self.index.jobs, reverse=True)
            if state is None:  # read the views of the page's jobs only
                rows, total = [self._job_row(self.index.jobs[i]) for i in ids[offset: offset + limit]], len(ids)
            else:
                rows = [r for r in (self._job_row(self.index.jobs[i]) for i in ids) if r["state"].lower() == state.lower()]
                total, rows = len(rows), rows[offset: offset + limit]
            return {"now": self.head_time, "head": self.index.head, "total": total, "jobs": rows}

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            f = self.index.jobs.get(int(job_id))
            if f is None:
                raise NotFound(f"job {job_id} is not on this chain (jobs: {len(self.index.jobs)})")
            row = self._job_row(f)
            row["timeline"] = [self._event(ev) for ev in f.timeline]
            row["game_rows"] = [self._game_row(self.index.games[g]) for g in f.games]
            row["spec"] = self.spec(f.spec_cid)
            row["now"], row["head"] = self.head_time, self.index.head
            return row

    def ipfs_url(self, cid: str, filename: str = "") -> str | None:
        if not cid:
            return None
        if self.gateway:
            return f"{self.gateway}/ipfs/{cid}"
        return f"/ipfs/{cid}" + (f"?filename={filename}" if filename else "")

    def cat(self, cid: str, limit: int) -> bytes:
        """Up to `limit` bytes of file `cid` from IPFS, every block checked against its CID."""
        if self.store is None:
            raise NotFound("no IPFS API configured (--ipfs-api)")
        with self._lock:
            return self.store.cat(cid, 0, limit)

    def spec(self, cid: str) -> dict[str, Any]:
        """The job spec document from IPFS (verified against its CID), or why it could not be read."""
        if not cid:
            return {"error": "no spec CID"}
        if cid not in self._specs:
            if self.store is None:
                return {"error": "no IPFS API configured"}
            from gpumesh.client.core.jobspec import JobSpecDoc

            try:
                doc = JobSpecDoc.from_bytes(self.store.cat(cid, 0, SPEC_MAX_BYTES))
            except Exception as exc:  # noqa: BLE001 - unreachable IPFS or a bad document: say so on the page
                return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]}
            meta = {}
            for k, v in sorted(doc.meta.items()):
                text = v if isinstance(v, str) else repr(v)
                meta[str(k)] = text if len(text) <= META_MAX_CHARS else (
                    f"{len(v)} values" if isinstance(v, list | dict) else text[:META_MAX_CHARS] + "…")
            self._specs[cid] = {"program_cid": doc.program_cid, "inputs_cid": doc.inputs_cid,
                                "inputs_url": self.ipfs_url(doc.inputs_cid, "inputs.safetensors"),
                                "program_root": hex0x(doc.program_root), "inputs_root": hex0x(doc.inputs_root),
                                "min_gpu_memory_mib": doc.min_gpu_memory_mib, "meta": meta}
        return self._specs[cid]

    # ---------------------------------------------------------------- workers and watchtowers
    def workers(self) -> dict[str, Any]:
        with self._lock:
            rows = [self.worker(a) for a in sorted(self.index.workers)]
            return {"now": self.head_time, "head": self.index.head, "workers": rows}

    def _find(self, table: dict, address: str, what: str):
        for k, v in table.items():
            if k.lower() == address.lower():
                return v
        raise NotFound(f"{address} is not a {what} seen on this chain")

    def worker(self, address: str) -> dict[str, Any]:
        with self._lock:
            f = self._find(self.index.workers, address, "worker")
            info = self._view(("stake", f.address), lambda: self.registry.info(f.address))
            return {"address": f.address, "stake": amount(info.total), "free_stake": amount(info.free),
                    "locked": amount(info.locked), "unbonding": amount(info.unbonding),
                    "jobs_claimed": list(f.claimed), "jobs_done": len(f.finalized), "jobs_finalized": list(f.finalized),
                    "earnings": amount(f.earnings), "rewards": amount(f.rewards), "game_income": amount(f.game_income),
                    "slashes": len(f.slashes), "slashed": amount(f.slashed), "slash_list": [{**s, "stake": amount(s["stake"])} for s in f.slashes],
                    "capabilities_cid": info.capabilities_cid or None, "now": self.head_time}

    def watchtowers(self) -> dict[str, Any]:
        with self._lock:
            rows = [self.watchtower(a) for a in sorted(self.index.towers)]
            return {"now": self.head_time, "head": self.index.head, "watchtowers": rows}

    def watchtower(self, address: str) -> dict[str, Any]:
        with self._lock:
            t = self._find(self.index.towers, address, "watchtower (challenger)")
            return {"address": t.address, "games": list(t.games), "data_requests": list(t.data_requests),
                    "won": t.won, "lost": t.lost, "open": len(t.games) - t.won - t.lost, "bonds": amount(t.bonds),
                    "slash_paid": amount(t.paid), "bonds_lost": amount(t.bonds_lost), "now": self.head_time}

    # ---------------------------------------------------------------- games
    def _game_row(self, g: GameFacts) -> dict[str, Any]:
        return {"id": g.game_id, "job": g.job_id, "kind": g.kind, "challenger": g.challenger, "worker": g.worker,
                "bond": amount(g.bond), "units": g.num_units, "outcome": g.outcome.name.lower().replace("_", " "),
                "reason": None if g.reason is None else g.reason.name.lower().replace("_", " "),
                "opened_block": g.opened_block, "opened_time": self._time(g.opened_block),
                "resolved_block": g.resolved_block or None}

    def games(self) -> dict[str, Any]:
        with self._lock:
            return {"now": self.head_time, "head": self.index.head,
                    "games": [self._game_row(self.index.games[i]) for i in sorted(self.index.games, reverse=True)]}

    def clock_seconds(self) -> int:
        if self._clock_seconds is None:
            self._clock_seconds = int(self.game.clock_seconds())
        return self._clock_seconds

    def game_detail(self, game_id: int) -> dict[str, Any]:
        with self._lock:
            g = self.index.games.get(int(game_id))
            if g is None:
                raise NotFound(f"game {game_id} is not on this chain (games: {len(self.index.games)})")
            txs = {ev.tx_hash: self._tx(ev.tx_hash) for ev in g.events}
            story = game_story(g, txs, self.clock_seconds())
            st = self._view(("game", g.game_id), lambda: self.game.get_game(g.game_id))
            live = {"phase": st.phase.name.lower().replace("_", " "), "turn": st.turn.name.lower(),
                    "move_no": st.move_no, "last_move_at": st.last_move_at,
                    "clocks": {"worker": st.worker_clock, "challenger": st.challenger_clock}}
            if not st.resolved:  # the mover's clock runs from its last move to now
                live["deadline"] = st.last_move_at + (st.worker_clock if st.turn.name == "WORKER" else st.challenger_clock)
            proven = next((ev for ev in g.events if ev.name == "OpProven"), None)
            return {**self._game_row(g), **story, "live": live, "clock_seconds": self.clock_seconds(),
                    "result_root": hex0x(g.result_root), "now": self.head_time, "head": self.index.head,
                    "op": op_label(proven.args["descriptor"]) if proven else None}
