"""What the watchtower checks, as pure functions: which units of a job to re-execute (a sample drawn
from a seed that is recorded before the first unit runs, so a restarted watchtower checks the same
units) and how its own per-unit output roots compare with the worker's.

Pure (no I/O, no torch): imported by the watchtower daemon and its unit tests.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def draw_seed() -> int:
    """A fresh 64-bit sampling seed (unpredictable to the worker: it cannot know which units
    will be checked when it chooses which to corrupt)."""
    return secrets.randbits(64)


def check_rate(rate: float) -> float:
    if not (isinstance(rate, int | float) and 0.0 < float(rate) <= 1.0):
        raise ValueError(f"sample rate must be in (0, 1], got {rate!r}")
    return float(rate)


def sample_units(num_units: int, rate: float, seed: int) -> tuple[int, ...]:
    """The units to re-execute: all of them at rate 1, else ceil(rate * numUnits) (at least one)
    distinct units drawn uniformly with `random.Random(seed)`, ascending."""
    check_rate(rate)
    if num_units < 1:
        raise ValueError("a job has at least one unit")
    k = max(1, math.ceil(rate * num_units))
    if k >= num_units:
        return tuple(range(num_units))
    return tuple(sorted(random.Random(seed).sample(range(num_units), k)))


def mismatches(own: Mapping[int, bytes], worker_roots: Sequence[bytes]) -> tuple[int, ...]:
    """Units whose output root we computed differs from the worker's published one."""
    return tuple(sorted(u for u, r in own.items() if bytes(worker_roots[u]) != bytes(r)))


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one job.

    `worker_roots` is None when the worker's outputs file was missing, malformed or did not hash
    to the on-chain result root: then every unit is re-executed and the result roots compared
    (`full`), and `mismatched` may be empty while the job is still wrong (`result_differs`).
    """

    job_id: int
    num_units: int
    checked: tuple[int, ...]
    own_roots: Mapping[int, bytes] = field(repr=False)
    worker_roots: tuple[bytes, ...] | None = field(repr=False)
    mismatched: tuple[int, ...]
    result_differs: bool
    full: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.result_differs

    def line(self, game_id: int | None = None) -> str:
        """The one log line of this check."""
        head = f"job {self.job_id}: checked {len(self.checked)}/{self.num_units} units"
        if self.note:
            head += f" ({self.note})"
        if self.ok:
            return f"{head}: OK"
        what = f"unit {self.mismatched[0]}" if self.mismatched else "result root"
        if len(self.mismatched) > 1:
            what += f" (+{len(self.mismatched) - 1} more)"
        tail = f" -> game {game_id}" if game_id is not None else ""
        return f"{head}: MISMATCH {what}{tail}"

    def to_json(self) -> dict:
        return {
            "checked": list(self.checked),
            "mismatched": list(self.mismatched),
            "result_differs": self.result_differs,
            "full": self.full,
            "note": self.note,
            "own_roots": {str(u): "0x" + bytes(r).hex() for u, r in self.own_roots.items() if u in self.mismatched},
        }
