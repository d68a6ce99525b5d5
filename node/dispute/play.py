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
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property

import numpy as np

from gpumesh.client.core.merkle import tensor_levels
from gpumesh.node.dispute.int8_prover import Int8Prover, JobInputs
from gpumesh.node.dispute.strategy import PlayerData, Program, TraceView


def program_facts(bundle) -> Program:
    """The public program facts the game uses (header and descriptors) of a ProgramBundle."""
    prog = bundle.program
    return Program(len(prog.weights), tuple(prog.descriptors()))


#: Default budget of a TraceCache (op output bytes and tensor trees kept between moves).
TRACE_CACHE_BYTES = 64 << 20
#: Bytes a tensor-tree node costs in memory (32-byte digest, bytes object header, list slot).
_NODE_BYTES = 80


class TraceCache:
    """LRU by bytes of what streaming traces recompute (op output bytes, their tensor trees), shared
    by every game of a daemon. Keys are tuples starting with a scope (a job id): `drop(scope)`
    evicts a job's entries when its games end. A value larger than the whole budget is not kept."""

    def __init__(self, max_bytes: int = TRACE_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"a trace cache budget is >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[tuple, tuple[object, int]] = OrderedDict()

    def get(self, key: tuple) -> object | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: tuple, value: object, size: int) -> None:
        self._discard(key)
        if size > self.max_bytes:
            return
        self._items[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            self._discard(next(iter(self._items)))

    def drop(self, scope: object) -> None:
        for key in [k for k in self._items if k[0] == scope]:
            self._discard(key)

    def _discard(self, key: tuple) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]

    def __len__(self) -> int:
        return len(self._items)


class StreamingTrace(TraceView):
    """One unit's trace (strategy.TraceView) that holds only the op output roots: `roots` is one
    streaming pass over the unit (Executor.trace_roots), and an op output, when a move needs its
    bytes or tree, is recomputed by `outputs(ops)` (the unit re-run up to the last of `ops`,
    Executor.op_outputs) and kept in the bounded TraceCache under `key`. A defence never needs more
    memory than one execution of the unit plus the cache."""

    def __init__(self, roots: Callable[[], Sequence[bytes]], outputs: Callable[[list[int]], Mapping[int, bytes]],
                 cache: TraceCache, key: tuple) -> None:
        self._roots_of, self._outputs, self.cache, self.key = roots, outputs, cache, key

    @cached_property
    def roots(self) -> list[bytes]:
        roots = [bytes(r) for r in self._roots_of()]
        if not roots:
            raise ValueError("a trace has at least one op output")
        return roots

    def _fetch(self, ops: Iterable[int]) -> dict[int, bytes]:
        have = {j: self.cache.get((*self.key, j, "out")) for j in ops}
        missing = [j for j, v in have.items() if v is None]
        if missing:  # ONE re-run for all of them
            for j, data in self._outputs(missing).items():
                self.cache.put((*self.key, j, "out"), data, len(data))
                have[j] = data
        return have

    def prefetch(self, ops: Iterable[int]) -> None:
        self._fetch(ops)

    def tensor(self, op: int) -> bytes:
        return self._fetch([op])[op]

    def tensor_levels(self, op: int) -> list[list[bytes]]:
        key = (*self.key, op, "levels")
        levels = self.cache.get(key)
        if levels is None:
            levels = tensor_levels(self.tensor(op))
            if levels[-1][0] != self.roots[op]:  # a nondeterministic executor: never answer from it
                raise RuntimeError(f"op {op}: recomputed output does not match its trace root")
            self.cache.put(key, levels, _NODE_BYTES * sum(len(lv) for lv in levels))
        return levels


class StreamingTraces:
    """`traces(u)`: the StreamingTrace of unit u of one job (its roots kept until `close()`),
    recomputing with `roots(u)` / `outputs(u, ops)`; `close()` forgets the job's traces and evicts
    its cache entries (its games ended)."""

    def __init__(self, roots: Callable[[int], Sequence[bytes]],
                 outputs: Callable[[int, list[int]], Mapping[int, bytes]], cache: TraceCache, scope: object) -> None:
        self._roots, self._outputs, self.cache, self.scope = roots, outputs, cache, scope
        self._units: dict[int, StreamingTrace] = {}

    def __call__(self, u: int) -> StreamingTrace:
        if u not in self._units:
            self._units[u] = StreamingTrace(lambda: self._roots(u), lambda ops: self._outputs(u, ops),
                                            self.cache, (self.scope, u))
        return self._units[u]

    def close(self) -> None:
        self._units.clear()
        self.cache.drop(self.scope)


def executor_traces(executor, units: np.ndarray, cache: TraceCache | None = None,
                    scope: object = None) -> StreamingTraces:
    """Streaming traces of `units` with a gpumesh.node.runtime.executor.Executor."""
    return StreamingTraces(lambda u: executor.trace_roots(units[u]), lambda u, ops: executor.op_outputs(units[u], ops),
                           cache if cache is not None else TraceCache(), scope)


def player_data(bundle, unit_roots: Sequence[bytes], trace: Callable[[int], TraceView],
                unit_output: Callable[[int], bytes] | None = None) -> PlayerData:
    """`unit_output(u)`: the worker's stored output bytes of unit u, to answer data requests."""
    return PlayerData(program_facts(bundle), tuple(bytes(r) for r in unit_roots), trace, unit_output)


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
