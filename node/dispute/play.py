"""Glue between a job's data and the dispute strategies: each side's PlayerData and the challenger's
StepProver (the real Int8Prover of the deployed Int8Verifier).

- Worker side: `player_data(bundle, unit_roots, trace)` with ITS committed unit roots and its own
  re-execution of the disputed unit in trace mode (the same executor that produced its outputs).
- Challenger side: the unit roots it believes (`spliced_roots`: its own for every unit it
  re-executed, the worker's published ones elsewhere, so a sampled check needs no full re-run:
  only units it computed can differ, so the descent can only lead to one of them) and its own
  traces; `int8_prover(bundle, units)` opens the job inputs for the one-step.

Imported by the watchtower, the worker's defender and tests. The executor is passed in (this module
never imports torch itself).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gpumesh.node.dispute.int8_prover import Int8Prover, JobInputs
from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace


def program_facts(bundle) -> Program:
    """The public program facts the game uses (header and descriptors) of a ProgramBundle."""
    prog = bundle.program
    return Program(len(prog.weights), tuple(prog.descriptors()))


class TraceCache:
    """`trace(u)`: every op output of unit u, recomputed on demand and kept for the last few units
    (a game disputes one unit; a trace of a big program is large)."""

    def __init__(self, compute: Callable[[int], Sequence[bytes]], keep: int = 2) -> None:
        self._compute = compute
        self._keep = keep
        self._cache: OrderedDict[int, UnitTrace] = OrderedDict()

    def __call__(self, u: int) -> UnitTrace:
        if u in self._cache:
            self._cache.move_to_end(u)
            return self._cache[u]
        t = UnitTrace(list(self._compute(u)))
        self._cache[u] = t
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return t


def executor_traces(executor, units: np.ndarray) -> TraceCache:
    """Traces of `units` with a gpumesh.node.runtime.executor.Executor."""
    return TraceCache(lambda u: executor.trace(units[u]).outputs)


def player_data(bundle, unit_roots: Sequence[bytes], trace: Callable[[int], UnitTrace]) -> PlayerData:
    return PlayerData(program_facts(bundle), tuple(bytes(r) for r in unit_roots), trace)


def spliced_roots(worker_roots: Sequence[bytes], own: Mapping[int, bytes]) -> tuple[bytes, ...]:
    """The challenger's result-tree leaves: its own root for every unit it computed, the worker's
    (verified against the on-chain result root) for the rest."""
    out = [bytes(r) for r in worker_roots]
    for u, r in own.items():
        if not 0 <= u < len(out):
            raise ValueError(f"unit {u} outside a job of {len(out)} units")
        out[u] = bytes(r)
    return tuple(out)


def int8_prover(bundle, units: np.ndarray) -> Int8Prover:
    """The challenger's StepProver over the job inputs it downloaded (weights in declaration
    order, unit inputs in unit order: the inputs root's two trees)."""
    weights = [bundle.weight_bytes[w.name] for w in bundle.program.weights]
    return Int8Prover(JobInputs(weights, [np.ascontiguousarray(u).tobytes() for u in units]))
