"""What `gpumesh worker status` shows, from the worker's state file alone: every job record (status,
`reason` text, `refusal` key when the acceptance policy or the machine ruled it out, the measured
`estimate_s`), the number of refused jobs per reason, and its advertised capabilities (GPU model
and memory, measured throughput per program). Pure over a StateStore."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gpumesh.node.common.store import StateStore
from gpumesh.node.worker.node import JOB, SELF, THROUGHPUT

#: Job record fields worth showing (the rest is bookkeeping: attempts, retry times, ...).
SHOWN = ("status", "reason", "refusal", "estimate_s", "claim_tx", "submit_tx", "result_root", "outputs_cid")


def status_of(state: StateStore) -> dict:
    jobs = {int(k): {f: v[f] for f in SHOWN if f in v} for k, v in state.all(JOB).items()}
    refusals = Counter(r["refusal"] for r in jobs.values() if "refusal" in r)
    return {"jobs": jobs, "refusals": dict(sorted(refusals.items())), "capabilities": capabilities_of(state)}


def capabilities_of(state: StateStore) -> dict:
    """What the worker advertises: its capability document as last published (device, GPUs with
    model and memory from NVML, CPU, limits, its CID) and the throughput it measured per program
    root (one timed stacked pass before its first claim of that program)."""
    doc = state.get(SELF, "capabilities") or {}
    shown = {k: doc[k] for k in ("device", "gpus", "cpu", "max_gpu_memory_mib", "limits", "cid") if k in doc}
    shown["gpus"] = [{k: g[k] for k in ("name", "memory_mib", "compute_capability") if k in g}
                     for g in shown.get("gpus", [])]
    shown["throughput"] = {"0x" + root: {k: v[k] for k in ("device", "units_per_second", "seconds_per_unit")}
                           for root, v in sorted(state.all(THROUGHPUT).items())}
    return shown


def status_at(path: Path) -> dict:
    """`status_of` the state file at `path` (opened and closed here)."""
    store = StateStore(path)
    try:
        return status_of(store)
    finally:
        store.close()
