"""Reading contract events with confirmations, resumable across restarts and safe across reorgs.

`EventReader.poll()` returns the new events of the watched contracts in blocks that have at least
`confirmations` blocks on top; `commit()` then persists the cursor in a `CursorStore` (a JSON file
or memory), so a crash between the two re-delivers rather than loses events (consumers are
idempotent, keyed by on-chain ids). Every poll re-reads the last `reorg_depth` blocks and drops
events already delivered, keyed by (blockHash, logIndex): after a reorg the replacement logs carry
new block hashes and are delivered, and `reorgs_seen` counts reorgs detected at the cursor.
Imported by daemons (worker, watchtower) and the CLI.
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


class EventReader:
    """Polls logs of `contracts` (web3 Contract objects) from `start_block` on."""

    def __init__(self, w3, contracts: list, store: CursorStore, start_block: int = 0,
                 confirmations: int = 0, reorg_depth: int = 12, max_range: int = 5000) -> None:
        if reorg_depth < 1:
            raise ValueError("reorg_depth must be >= 1")
        self.w3 = w3
        self.store = store
        self.start_block = start_block
        self.confirmations = confirmations
        self.reorg_depth = reorg_depth
        self.max_range = max_range
        self.reorgs_seen = 0
        self._pending: Cursor | None = None
        self._by_topic: dict[tuple[str, bytes], Any] = {}  # both contracts emit Withdrawn(address,uint256)
        self._addresses = []
        for c in contracts:
            self._addresses.append(c.address)
            for ev in c.events:
                self._by_topic[(c.address, _topic_bytes(ev().topic))] = ev()

    def poll(self) -> list[ChainEvent]:
        """New confirmed events, in chain order. Call commit() once they are handled."""
        head = self.w3.eth.block_number
        safe = head - self.confirmations
        cur = self._pending or self.store.load()
        if cur is None:
            from_block, seen = self.start_block, set()
        else:
            seen = set(cur.seen)
            if self._block_hash(cur.block) != cur.block_hash:
                self.reorgs_seen += 1
            from_block = max(self.start_block, cur.block - self.reorg_depth + 1)
        if safe < from_block or safe < 0:
            return []
        to_block = min(safe, from_block + self.max_range - 1)
        logs = self.w3.eth.get_logs({"fromBlock": from_block, "toBlock": to_block, "address": self._addresses})
        out: list[ChainEvent] = []
        for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"])):
            ev = self._decode(log)
            if ev is not None and ev.key not in seen:
                out.append(ev)
        window_start = to_block - self.reorg_depth + 1
        keep = {k for k in seen if self._block_of_key(k, logs, window_start)}
        keep |= {e.key for e in out if e.block_number >= window_start}
        self._pending = Cursor(to_block, self._block_hash(to_block), tuple(sorted(keep)))
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
