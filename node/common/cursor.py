"""The EventReader's cursor kept in the daemon's StateStore (one SQLite file holds all its state):
the one cursor of both daemons (worker and watchtower), record kind "cursor" keyed by stream name."""

from __future__ import annotations

from gpumesh.client.chain.events import Cursor
from gpumesh.node.common.store import StateStore


class StateCursorStore:
    """CursorStore (gpumesh.client.chain.events) over a StateStore record."""

    def __init__(self, state: StateStore, name: str) -> None:
        self.state, self.name = state, name

    def load(self) -> Cursor | None:
        d = self.state.get("cursor", self.name)
        return None if d is None else Cursor(int(d["block"]), str(d["block_hash"]), tuple(d.get("seen", ())))

    def save(self, cursor: Cursor) -> None:
        self.state.put("cursor", self.name, {"block": cursor.block, "block_hash": cursor.block_hash,
                                             "seen": list(cursor.seen)})
