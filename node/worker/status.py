"""What `gpumesh worker status` shows, from the worker's state file alone: every job record (status,
`reason` text, `refusal` key when the acceptance policy or the machine ruled it out, the measured
`estimate_s`) and the number of refused jobs per reason. Pure over a StateStore."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gpumesh.node.common.store import StateStore
from gpumesh.node.worker.node import JOB

#: Job record fields worth showing (the rest is bookkeeping: attempts, retry times, ...).
SHOWN = ("status", "reason", "refusal", "estimate_s", "claim_tx", "submit_tx", "result_root", "outputs_cid")


def status_of(state: StateStore) -> dict:
    jobs = {int(k): {f: v[f] for f in SHOWN if f in v} for k, v in state.all(JOB).items()}
    refusals = Counter(r["refusal"] for r in jobs.values() if "refusal" in r)
    return {"jobs": jobs, "refusals": dict(sorted(refusals.items()))}


def status_at(path: Path) -> dict:
    """`status_of` the state file at `path` (opened and closed here)."""
    store = StateStore(path)
    try:
        return status_of(store)
    finally:
        store.close()
