"""TEST TOOL: fault injection for the demo and the end-to-end tests: a worker whose executor flips
one bit (FLIP) of one element of one op output in one unit, INSIDE the forward pass, so every later op
computes on the corrupted value (as a faulty GPU would) and the worker's outputs, result root and
dispute trace all agree with each other and disagree with the honest computation. A watchtower
must catch it and the dispute game must slash it.

Adapter code (torch, through the runtime's executor and kernels); imported by the worker daemon.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from gpumesh.client.core.errors import UsageError
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import Executor, Trace
from gpumesh.node.runtime.files import ProgramBundle

#: The flipped bit: +-64, in range for int8 and int32, and large enough that the change usually
#: reaches the unit's output (a corruption that does not change the output is not a wrong result,
#: and no watchtower can or needs to catch it).
FLIP = 0x40


@dataclass(frozen=True)
class Fault:
    """Corrupt element `element` (negative: from the end) of op `op`'s output (an index, or the op's
    name) in unit `unit`."""

    unit: int
    op: int | str
    element: int

    @staticmethod
    def parse(text: str) -> Fault:
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"--corrupt takes UNIT:OP:ELEMENT (e.g. 0:3:17 or 2:fc:-1), got {text!r}")
        try:
            unit, element = int(parts[0]), int(parts[2])
        except ValueError:
            raise UsageError(f"--corrupt {text!r}: UNIT and ELEMENT must be integers") from None
        op: int | str = int(parts[1]) if parts[1].lstrip("-").isdigit() else parts[1]
        if unit < 0:
            raise UsageError(f"--corrupt {text!r}: UNIT must be >= 0")
        return Fault(unit, op, element)

    def resolve(self, bundle: ProgramBundle) -> tuple[int, int]:
        """(op index, element index) in this program, checked against its shapes."""
        ops = bundle.program.ops
        if isinstance(self.op, str):
            idx = [i for i, o in enumerate(ops) if o.name == self.op]
            if not idx:
                raise UsageError(f"--corrupt: the program has no op named {self.op!r}")
            op = idx[0]
        else:
            op = self.op if self.op >= 0 else len(ops) + self.op
        if not 0 <= op < len(ops):
            raise UsageError(f"--corrupt: op {self.op} out of range (the program has {len(ops)} ops)")
        n = ops[op].desc.out.count
        e = self.element if self.element >= 0 else n + self.element
        if not 0 <= e < n:
            raise UsageError(f"--corrupt: element {self.element} out of range (op {op} has {n} elements)")
        return op, e


class FaultyExecutor(Executor):
    """An Executor that corrupts one element of one op output of one unit (TEST TOOL).

    Callers go through `run_unit_at(u, unit)` and `trace_at(u, unit)`, which say which unit is being
    computed; the corruption applies only to `fault.unit`."""

    def __init__(self, bundle: ProgramBundle, fault: Fault, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        self.fault = fault
        self.fault_op, self.fault_element = fault.resolve(bundle)
        self._active = False
        plan = getattr(self, "_plan", None)
        if plan is not None:
            # The executor runs a plan of prepared per-op closures: wrap the faulty op's closure, so
            # the forward pass itself is the executor's own (later ops read the corrupted tensor).
            fn, srcs = plan[self.fault_op]
            plan[self.fault_op] = (lambda xs, fn=fn: self._corrupt(fn(xs)), srcs)
            # every path runs the per-op plan: the fault is in one op's output as the spec defines it
            self._honest, self.pooled = plan, ()

    def _corrupt(self, y: torch.Tensor) -> torch.Tensor:
        if not self._active:
            return y
        y = y.clone(memory_format=torch.contiguous_format)
        flat = y.view(-1)
        flat[self.fault_element] = flat[self.fault_element] ^ FLIP  # one flipped bit
        return y

    @contextmanager
    def at(self, u: int) -> Iterator[None]:
        """Computing unit `u`: the fault applies inside the block when `u` is the faulty unit."""
        self._active = u == self.fault.unit
        try:
            yield
        finally:
            self._active = False

    def run_unit_at(self, u: int, unit: np.ndarray) -> np.ndarray:
        with self.at(u):
            return self.run_unit(unit)

    def trace_at(self, u: int, unit: np.ndarray) -> Trace:
        with self.at(u):
            return self.trace(unit)

    def trace_roots_at(self, u: int, unit: np.ndarray) -> list[bytes]:
        with self.at(u):
            return self.trace_roots(unit)

    def op_outputs_at(self, u: int, unit: np.ndarray, ops: Iterable[int]) -> dict[int, bytes]:
        with self.at(u):
            return self.op_outputs(unit, ops)

    def _forward(self, unit: torch.Tensor, keep: bool) -> list[torch.Tensor | None]:
        if hasattr(self, "_plan"):
            return super()._forward(unit, keep)
        # An executor without a plan runs kernels.run_op per op: the same loop, corrupting op
        # `fault_op`'s output before any later op reads it.
        outs: list[torch.Tensor | None] = []
        for j, d in enumerate(self._descs):
            xs = [self._weights[s.index] if s.kind == SlotKind.WEIGHT else unit if s.kind == SlotKind.UNIT_INPUT
                  else outs[s.index] for s in d.inputs]
            y = kernels.run_op(d, xs)
            outs.append(self._corrupt(y) if j == self.fault_op else y)
            if not keep:
                for s in d.inputs:
                    if s.kind == SlotKind.OP_OUTPUT and self._last_use[s.index] == j:
                        outs[s.index] = None
        return outs


def executor_for(bundle: ProgramBundle, device: str = "cpu", fault: Fault | None = None) -> Executor:
    return FaultyExecutor(bundle, fault, device) if fault is not None else Executor(bundle, device)


def run_unit_at(ex: Executor, u: int, unit: np.ndarray) -> np.ndarray:
    return ex.run_unit_at(u, unit) if isinstance(ex, FaultyExecutor) else ex.run_unit(unit)


def run_units_at(ex: Executor, us: list[int], units: np.ndarray) -> np.ndarray:
    """Outputs of units `us` (their inputs `units`): stacked passes, or one by one on a faulty
    executor (its fault belongs to one unit index)."""
    if isinstance(ex, FaultyExecutor):
        return np.stack([ex.run_unit_at(u, x) for u, x in zip(us, units, strict=True)])
    return ex.run_units(units)


def trace_at(ex: Executor, u: int, unit: np.ndarray) -> Trace:
    return ex.trace_at(u, unit) if isinstance(ex, FaultyExecutor) else ex.trace(unit)


def trace_roots_at(ex: Executor, u: int, unit: np.ndarray) -> list[bytes]:
    """Executor.trace_roots of unit `u` (streaming defence)."""
    return ex.trace_roots_at(u, unit) if isinstance(ex, FaultyExecutor) else ex.trace_roots(unit)


def op_outputs_at(ex: Executor, u: int, unit: np.ndarray, ops: Iterable[int]) -> dict[int, bytes]:
    """Executor.op_outputs of unit `u` (streaming defence: op outputs recomputed on demand)."""
    return ex.op_outputs_at(u, unit, ops) if isinstance(ex, FaultyExecutor) else ex.op_outputs(unit, ops)
