"""The explorer's read endpoints, one table for the HTTP server and `gpumesh explorer show`:

    /api/overview                 chain, head, contracts, counts
    /api/jobs[?state=S&limit=N&offset=M]   newest first
    /api/jobs/ID                  one job: views, deadlines, timeline, games, spec from IPFS
    /api/workers, /api/workers/ADDRESS
    /api/watchtowers, /api/watchtowers/ADDRESS
    /api/games, /api/games/ID     one game: moves (side, gas, clocks) and the bisection path

`answer(explorer, path, query)` returns the JSON-ready dict or raises NotFound / UsageError.
"""

from __future__ import annotations

import re
from typing import Any

from gpumesh.client.core.errors import UsageError
from gpumesh.client.explorer.reader import Explorer, NotFound

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _int(text: str, what: str, lo: int = 0, hi: int = 2**63) -> int:
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, got {text[:40]!r}") from None
    if not lo <= v <= hi:
        raise UsageError(f"{what} must be in [{lo}, {hi}], got {v}")
    return v


def _address(text: str) -> str:
    if not _ADDRESS.match(text):
        raise UsageError(f"not an address (0x + 40 hex): {text[:60]!r}")
    return text


def answer(ex: Explorer, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    q = query or {}
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[1:]
    if not parts:
        raise NotFound("no such endpoint: /api (try /api/overview)")
    kind, rest = parts[0], parts[1:]
    if len(rest) > 1:
        raise NotFound(f"no such endpoint: /{'/'.join(['api', *parts])}")
    key = rest[0] if rest else None
    if kind == "overview" and key is None:
        return ex.overview()
    if kind == "jobs":
        if key is None:
            state = q.get("state") or None
            return ex.jobs(state, _int(q.get("limit", "100"), "limit", 1, 1000), _int(q.get("offset", "0"), "offset"))
        return ex.job(_int(key, "job id", 1))
    if kind == "workers":
        return ex.workers() if key is None else ex.worker(_address(key))
    if kind == "watchtowers":
        return ex.watchtowers() if key is None else ex.watchtower(_address(key))
    if kind == "games":
        return ex.games() if key is None else ex.game_detail(_int(key, "game id", 1))
    raise NotFound(f"no such endpoint: /{'/'.join(['api', *parts])}")
