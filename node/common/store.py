"""Crash-safe daemon state in SQLite (WAL, one writer): records keyed by on-chain ids (event
cursors among them: gpumesh.node.common.cursor), and an outbox of signed transactions.

The outbox is what makes restarts safe: a handler records the signed raw transaction (and its
hash) BEFORE broadcasting it. After a crash the daemon re-broadcasts pending entries (the same
bytes, so the same nonce and hash: never a double send) and settles them by receipt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, updated REAL NOT NULL,
  PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS outbox (
  intent TEXT PRIMARY KEY, raw_tx BLOB NOT NULL, tx_hash TEXT NOT NULL, status TEXT NOT NULL,
  created REAL NOT NULL, detail TEXT);
"""


@dataclass(frozen=True)
class OutboxEntry:
    intent: str  # a stable name for what the tx does, e.g. "submit:job:7" or "move:game:3:12"
    raw_tx: bytes
    tx_hash: str
    status: str  # "pending" | "mined" | "failed"
    created: float
    detail: str | None


_UPSERT = ("INSERT INTO records(kind,key,data,updated) VALUES(?,?,?,?) "
           "ON CONFLICT(kind,key) DO UPDATE SET data=excluded.data, updated=excluded.updated")


class StateStore:
    """One SQLite file per daemon. Thread-safe for the daemon's few threads (a lock + one connection)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- records ---------------------------------------------------------------------------
    def get(self, kind: str, key: str | int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM records WHERE kind=? AND key=?", (kind, str(key))).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, key: str | int, data: dict[str, Any]) -> None:
        self.put_many(kind, [(key, data)])

    def put_many(self, kind: str, items: list[tuple[str | int, dict[str, Any]]]) -> None:
        """Several records in one transaction (one commit): all or none."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(_UPSERT, [(kind, str(k), json.dumps(d, sort_keys=True), now) for k, d in items])

    def update(self, kind: str, key: str | int, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into a record (creating it) atomically; returns the new record."""
        with self.transaction() as db:
            row = db.execute("SELECT data FROM records WHERE kind=? AND key=?", (kind, str(key))).fetchone()
            data = json.loads(row[0]) if row else {}
            data.update(changes)
            db.execute(_UPSERT, (kind, str(key), json.dumps(data, sort_keys=True), time.time()))
        return data

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT key, data FROM records WHERE kind=? ORDER BY key", (kind,)).fetchall()
        return {k: json.loads(d) for k, d in rows}

    def delete(self, kind: str, key: str | int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, str(key)))

    # --- outbox ------------------------------------------------------------------------------
    def outbox_get(self, intent: str) -> OutboxEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT intent, raw_tx, tx_hash, status, created, detail FROM outbox WHERE intent=?", (intent,)
            ).fetchone()
        return OutboxEntry(*row) if row else None

    def outbox_add(self, intent: str, raw_tx: bytes, tx_hash: str) -> OutboxEntry:
        """Record a signed tx before it is sent. Adding the same intent twice keeps the first."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox(intent,raw_tx,tx_hash,status,created) VALUES(?,?,?,?,?)",
                (intent, raw_tx, tx_hash, "pending", time.time()),
            )
        entry = self.outbox_get(intent)
        assert entry is not None
        return entry

    def outbox_replace(self, intent: str, raw_tx: bytes, tx_hash: str) -> None:
        """The pending entry now stands for a replacement (same nonce, higher fees), recorded before
        it is broadcast like the first bytes were."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET raw_tx=?, tx_hash=? WHERE intent=?", (raw_tx, tx_hash, intent))

    def outbox_settle(self, intent: str, status: str, detail: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbox SET status=?, detail=? WHERE intent=?", (status, detail, intent))

    def outbox_recent(self, status: str, limit: int) -> list[OutboxEntry]:
        """The `limit` newest entries in `status` (a reorg can only have undone recent ones)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT intent, raw_tx, tx_hash, status, created, detail FROM outbox "
                "WHERE status=? ORDER BY created DESC LIMIT ?", (status, int(limit))
            ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def outbox_pending(self) -> list[OutboxEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT intent, raw_tx, tx_hash, status, created, detail FROM outbox "
                "WHERE status='pending' ORDER BY created"
            ).fetchall()
        return [OutboxEntry(*r) for r in rows]
