"""Reading contract events with confirmations, resumable across restarts and safe across reorgs.

`EventReader.poll()` returns the new events of the watched contracts in blocks that have at least
`confirmations` blocks on top; `commit()` then persists the cursor in a `CursorStore` (a JSON file
or memory), so a crash between the two re-delivers rather than loses events (consumers are
idempotent, keyed by on-chain ids). Every poll re-reads the last `reorg_depth` blocks and drops
events already delivered, keyed by (blockHash, logIndex): after a reorg the replacement logs carry
new block hashes and are delivered, and `reorgs_seen` counts reorgs detected at the cursor.
Every `eth_getLogs` here is bounded in block span (hosted providers refuse wide ranges once a chain
is old) and adaptive: `LogWindow` halves the span when the provider refuses a range or a result
size, and grows it back after successes. `logs_in_chunks` walks a range in such spans (newest first
when only the last matching event is wanted); `find_logs` does it for one contract event with
argument filters. Imported by daemons (worker, watchtower) and the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpumesh.client.core.errors import ChainError


@dataclass(frozen=True)
class ChainEvent:
    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def key(self) -> str:
        return f"{self.block_hash}:{self.log_index}"


@dataclass(frozen=True)
class Cursor:
    """The last block processed, its hash, and keys of events delivered in the re-read window."""

    block: int
    block_hash: str
    seen: tuple[str, ...] = field(default_factory=tuple)


class CursorStore(Protocol):
    def load(self) -> Cursor | None: ...
    def save(self, cursor: Cursor) -> None: ...


class MemoryCursorStore:
    def __init__(self) -> None:
        self.cursor: Cursor | None = None

    def load(self) -> Cursor | None:
        return self.cursor

    def save(self, cursor: Cursor) -> None:
        self.cursor = cursor


class JsonCursorStore:
    """The cursor in one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Cursor | None:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            return Cursor(int(d["block"]), str(d["block_hash"]), tuple(d.get("seen", ())))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"event cursor {self.path} is corrupt: {exc}") from None

    def save(self, cursor: Cursor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"block": cursor.block, "block_hash": cursor.block_hash,
                                   "seen": list(cursor.seen)}), encoding="utf-8")
        os.replace(tmp, self.path)


def _hex(b: Any) -> str:
    return "0x" + bytes(b).hex()


def _topic_bytes(t: Any) -> bytes:
    # web3 8 gives event topics as 0x-hex strings and log topics as HexBytes.
    return bytes.fromhex(t.removeprefix("0x")) if isinstance(t, str) else bytes(t)


#: Provider refusals that mean "ask for fewer blocks" (geth, Erigon, Alchemy, Infura, QuickNode,
#: Ankr, drpc... phrase it differently; all are about a range or a result size).
_RANGE_REFUSALS = ("range", "too large", "too many", "limit", "exceed", "more than", "10000 results",
                   "response size", "timeout", "timed out")


def is_range_refusal(exc: BaseException) -> bool:
    from web3.exceptions import Web3RPCError

    msg = str(getattr(exc, "message", None) or exc).lower()
    return isinstance(exc, Web3RPCError | ValueError) and any(m in msg for m in _RANGE_REFUSALS)


class LogWindow:
    """The block span of one eth_getLogs: starts at `span`, halves on a range refusal (down to 1),
    doubles back after `grow_after` answered requests in a row (up to `max_span`)."""

    def __init__(self, span: int = 2000, max_span: int = 10_000, grow_after: int = 4) -> None:
        if not 1 <= span <= max_span:
            raise ValueError("need 1 <= span <= max_span")
        self.span, self.max_span, self.grow_after = span, max_span, grow_after
        self._ok = 0
        self.refusals = 0

    def shrink(self) -> bool:
        """Halve the span; False when it is already one block (nothing left to try)."""
        self.refusals += 1
        self._ok = 0
        if self.span == 1:
            return False
        self.span = max(1, self.span // 2)
        return True

    def answered(self) -> None:
        self._ok += 1
        if self._ok >= self.grow_after and self.span < self.max_span:
            self.span, self._ok = min(self.max_span, self.span * 2), 0


def window_of(w3) -> LogWindow:
    """The LogWindow shared by everything reading logs through `w3` (one provider, one limit)."""
    holder = getattr(w3, "provider", w3)
    win = getattr(holder, "gpumesh_log_window", None)
    if win is None:
        win = LogWindow()
        holder.gpumesh_log_window = win
    return win


def logs_in_chunks(fetch, from_block: int, to_block: int, window: LogWindow, *,
                   newest_first: bool = False, enough=None) -> list:
    """`fetch(a, b)` (one eth_getLogs over blocks a..b) over [from_block, to_block] in spans of
    `window`, oldest chunk first or `newest_first`; stops early once `enough(logs so far)`."""
    out: list = []
    lo, hi = from_block, to_block
    while lo <= hi:
        a, b = (max(lo, hi - window.span + 1), hi) if newest_first else (lo, min(hi, lo + window.span - 1))
        try:
            got = list(fetch(a, b))
        except Exception as exc:
            if is_range_refusal(exc) and window.shrink():
                continue
            raise
        window.answered()
        out = got + out if newest_first else out + got
        if newest_first:
            hi = a - 1
        else:
            lo = b + 1
        if enough is not None and enough(out):
            break
    return out


def find_logs(w3, event, filters: dict | None, from_block: int, *, last_only: bool = False) -> list:
    """Logs of contract `event` (a web3 ContractEvent class, e.g. `contract.events.JobPosted`)
    matching `filters`, from `from_block` to the head, in bounded spans; `last_only`: walk back
    from the head and stop at the first chunk with a match (the newest event)."""
    head = int(w3.eth.block_number)
    ev = event()

    def fetch(a: int, b: int):
        return ev.get_logs(argument_filters=filters or None, from_block=a, to_block=b)

    logs = logs_in_chunks(fetch, from_block, head, window_of(w3), newest_first=last_only,
                          enough=(lambda got: bool(got)) if last_only else None)
    return sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"]))


class EventReader:
    """Polls logs of `contracts` (web3 Contract objects) from `start_block` on.

    `confirmations`: blocks on top of an event before it is delivered, or a block tag, "safe" or
    "finalized", whose block is the last one read (chains with a finality gadget)."""

    def __init__(self, w3, contracts: list, store: CursorStore, start_block: int = 0,
                 confirmations: int | str = 0, reorg_depth: int = 12, max_range: int = 5000) -> None:
        if reorg_depth < 1:
            raise ValueError("reorg_depth must be >= 1")
        if isinstance(confirmations, str) and confirmations not in ("safe", "finalized"):
            raise ValueError("confirmations: a number of blocks, 'safe' or 'finalized'")
        self.w3 = w3
        self.store = store
        self.start_block = start_block
        self.confirmations = confirmations
        self.reorg_depth = reorg_depth
        self.max_range = max_range
        self.window = window_of(w3)
        self.reorgs_seen = 0
        self._pending: Cursor | None = None
        self._by_topic: dict[tuple[str, bytes], Any] = {}  # both contracts emit Withdrawn(address,uint256)
        self._addresses = []
        for c in contracts:
            self._addresses.append(c.address)
            for ev in c.events:
                self._by_topic[(c.address, _topic_bytes(ev().topic))] = ev()

    def last_block(self, head: int | None = None) -> int:
        """The newest block whose events may be delivered (`head`: the head number, if known)."""
        if isinstance(self.confirmations, str):
            return int(self.w3.eth.get_block(self.confirmations)["number"])
        return (int(self.w3.eth.block_number) if head is None else head) - self.confirmations

    def poll(self, head: int | None = None, top=None) -> list[ChainEvent]:
        """New confirmed events, in chain order. Call commit() once they are handled. `head`: the
        head number when the caller has it; `top`: the head block itself (a
        gpumesh.client.chain.provider.Head: number, hash, parent_hash), saving a header request
        when it is the last block read."""
        safe = self.last_block(head)
        cur = self._pending or self.store.load()
        if cur is None:
            from_block, seen = self.start_block, set()
        else:
            seen = set(cur.seen)
            from_block = max(self.start_block, cur.block - self.reorg_depth + 1)
        if safe < from_block or safe < 0:
            return []
        if cur is not None and safe == cur.block:
            # no new block: the cursor's block still there means nothing to read (one header)
            if self._block_hash(cur.block) == cur.block_hash:
                self._pending = cur
                return []
            self.reorgs_seen += 1
        while True:  # one bounded request; a refused span is halved and asked again
            to_block = min(safe, from_block + min(self.max_range, self.window.span) - 1)
            try:
                logs = self.w3.eth.get_logs({"fromBlock": from_block, "toBlock": to_block,
                                             "address": self._addresses})
                self.window.answered()
                break
            except Exception as exc:
                if not (is_range_refusal(exc) and self.window.shrink()):
                    raise
        out: list[ChainEvent] = []
        for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"])):
            if f"{_hex(log['blockHash'])}:{log['logIndex']}" in seen:
                continue  # delivered by an earlier poll (the re-read window): not decoded again
            ev = self._decode(log)
            if ev is not None:
                out.append(ev)
        window_start = to_block - self.reorg_depth + 1
        keep = {k for k in seen if self._block_of_key(k, logs, window_start)}
        keep |= {e.key for e in out if e.block_number >= window_start}
        if top is not None and top.number == to_block and top.parent_hash:
            to_hash, to_parent = top.hash, top.parent_hash
        else:
            blk = self.w3.eth.get_block(to_block)
            to_hash, to_parent = _hex(blk["hash"]), _hex(blk["parentHash"])
        if cur is not None and safe > cur.block:
            # A reorg under the cursor: the new block's parent (one block on) or the cursor's block
            # read again (several on) differs. The re-read window above has delivered its logs.
            parent = to_parent if to_block == cur.block + 1 else self._block_hash(cur.block)
            if parent != cur.block_hash:
                self.reorgs_seen += 1
        self._pending = Cursor(to_block, to_hash, tuple(sorted(keep)))
        return out

    def commit(self) -> None:
        """Persist the cursor of the last poll (events up to it are handled)."""
        if self._pending is not None:
            self.store.save(self._pending)

    # ---- internals
    def _block_hash(self, n: int) -> str:
        return _hex(self.w3.eth.get_block(n)["hash"])

    @staticmethod
    def _block_of_key(key: str, logs, window_start: int) -> bool:
        # A seen key stays while its log is still inside the re-read window (same hash, same index).
        h, idx = key.split(":")
        return any(_hex(lg["blockHash"]) == h and lg["logIndex"] == int(idx) and lg["blockNumber"] >= window_start
                   for lg in logs)

    def _decode(self, log) -> ChainEvent | None:
        if not log["topics"]:
            return None
        ev = self._by_topic.get((log["address"], _topic_bytes(log["topics"][0])))
        if ev is None:
            return None
        decoded = ev.process_log(log)
        return ChainEvent(decoded["event"], dict(decoded["args"]), log["address"], log["blockNumber"],
                          _hex(log["blockHash"]), _hex(log["transactionHash"]), log["logIndex"])
