"""Test support: place a random single-op case (gpumesh.node.runtime.randprog) in a job, the way the
forge tests place the shared vectors (contracts/test/verifier/VerifierBase.sol): input 0 is unit
`unit` of `num_units` unit inputs, inputs 1.. are weights followed by unrelated weights; or, with
`trace_slot`, input 0 is slot `trace_slot` of a trace of `num_ops` ops disputed at `op_index`.
Yields the StepContext, a source for each input and the element's reference value.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from gpumesh.client.core import merkle
from gpumesh.client.core.merkle import inclusion_proof, roots_levels, roots_zero
from gpumesh.client.core.ops.reference import compute_element, element_ranges
from gpumesh.client.core.ops.types import OpDescriptor, SlotKind, SlotRef
from gpumesh.node.dispute.int8_prover import JobInputs, SlotSource, StepContext
from gpumesh.node.runtime.randprog import OpCase


def fake_tensor(tag: str, n: int = 40) -> bytes:
    return hashlib.sha256(tag.encode()).digest() * (n // 32 + 1)


@dataclass(frozen=True)
class Placed:
    desc: OpDescriptor
    data: tuple[bytes, ...]  # canonical bytes of each input
    ctx: StepContext
    job: JobInputs
    trace: tuple[bytes, ...] | None  # op outputs of the unit (trace variant)

    def source(self, i: int) -> SlotSource:
        s = self.desc.inputs[i]
        if s.kind == SlotKind.WEIGHT:
            return self.job.weight_source(s.index)
        if s.kind == SlotKind.UNIT_INPUT:
            return self.job.unit_source(self.ctx.unit_index)
        levels = [merkle.tensor_levels(t) for t in self.trace]
        path = inclusion_proof(roots_levels([lv[-1][0] for lv in levels]), s.index, roots_zero)
        return SlotSource(self.trace[s.index], levels[s.index], tuple(path))

    def read(self, i: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of input i (what element_ranges reads for gather's table row)."""
        return self.data[i][start:end]

    def reference(self, element: int) -> int:
        """The element from the full input tensors (scalar reference on plain slices)."""
        chunks = [self.data[r.input][r.start : r.end] for r in element_ranges(self.desc, element, self.read)]
        return compute_element(self.desc, element, chunks)


def place(case: OpCase, *, unit: int = 1, num_units: int = 3, extra_weights: int = 2,
          trace_slot: int | None = None, num_ops: int = 6, op_index: int = 3) -> Placed:
    data = tuple(np.ascontiguousarray(a).tobytes() for a in case.inputs)
    desc = case.desc
    weights = list(data[1:]) + [fake_tensor(f"extra weight {i}") for i in range(extra_weights)]
    units = [fake_tensor(f"unit {u}") for u in range(num_units)]
    trace = None
    if trace_slot is None:
        units[unit] = data[0]
    else:
        ins = list(desc.inputs)
        ins[0] = SlotRef(SlotKind.OP_OUTPUT, trace_slot, ins[0].type)
        desc = dataclasses.replace(desc, inputs=tuple(ins))
        trace = tuple(data[0] if j == trace_slot else fake_tensor(f"op {j}", 100 * j + 7) for j in range(num_ops))
    job = JobInputs(weights, units)
    trace_root = merkle.roots_root([merkle.tensor_root(t) for t in trace]) if trace else merkle.ZERO32
    ctx = StepContext(job.inputs_root, trace_root, unit, num_units, op_index, num_ops, len(weights))
    return Placed(desc, data, ctx, job, trace)
