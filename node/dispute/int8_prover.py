"""StepProver of the int8 one-step verifier (contracts/src/dispute/Int8Verifier.sol): builds the
`proofs` bytes of DisputeGame.step from the challenger's own data, and opens such bytes again the
way the contract does (a pre-flight check and the twin the tests compare with the contract).

proofs layout (docs/protocol.md 5.7.3): for each input the element reads (the inputs of
`element_ranges`, ascending), once:
    slotRoot (32) || rootPath (32 each, bottom first)
followed by each byte range of that input, in element_ranges order:
    leaves [start // LEAF_BYTES, ceil(end / LEAF_BYTES)) (LEAF_BYTES each) || range siblings (32 each)
rootPath: WEIGHT w -> path of leaf w in the weights roots tree, then unitInputsRoot (the weights
root is the left child of inputsRoot); UNIT_INPUT -> path of leaf unitIndex in the unit-inputs roots
tree, then weightsRoot (right child); OP_OUTPUT j (< opIndex) -> path of leaf j in the trace tree.
Every length follows from the descriptor and the context, so there are no length fields.

Pure (hashing only): imported by the watchtower/worker daemons and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from gpumesh.client.core.constants import LEAF_BYTES, ZERO32
from gpumesh.client.core.game import GameSnapshot
from gpumesh.client.core.merkle import (
    RangeProof,
    depth_for,
    inclusion_proof,
    node_hash,
    range_proof,
    roots_levels,
    roots_zero,
    tensor_depth,
    tensor_levels,
    verify_inclusion,
    verify_range,
)
from gpumesh.client.core.ops.reference import ByteRange, element_ranges, gather_id_range, gather_row
from gpumesh.client.core.ops.types import Opcode, OpDescriptor, SlotKind
from gpumesh.node.dispute.strategy import AgreedTrace


class StepProofError(ValueError):
    """A proofs blob that Int8Verifier would reject (wrong length, root or range proof)."""


@dataclass(frozen=True)
class StepContext:
    """The fields of IOneStepVerifier.OneStepContext that the proofs depend on."""

    inputs_root: bytes
    trace_root: bytes
    unit_index: int
    num_units: int
    op_index: int
    num_ops: int
    num_weights: int

    @classmethod
    def from_snapshot(cls, snap: GameSnapshot) -> StepContext:
        return cls(snap.inputs_root, snap.trace_root, snap.unit_index, snap.num_units, snap.op_index,
                   snap.num_ops, snap.num_weights)


@dataclass(frozen=True)
class SlotSource:
    """One input tensor as the prover holds it: canonical bytes, its tensor tree (levels, as
    core.merkle.tensor_levels) and the path that chains its root to the agreed commitment."""

    data: bytes
    levels: list[list[bytes]]
    root_path: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]


def sibling_count(depth: int, lo: int, hi: int) -> int:
    """Siblings in a range proof of leaves [lo, hi] of a depth-`depth` tree (Int8Verifier.siblingCount)."""
    n = 0
    for _ in range(depth):
        n += lo & 1
        n += 1 - (hi & 1)
        lo >>= 1
        hi >>= 1
    return n


def encode_proofs(desc: OpDescriptor, element: int, source: Callable[[int], SlotSource]) -> bytes:
    """The proofs blob for output element `element`; `source(i)` gives input i (asked only for
    the inputs the element reads)."""
    out = bytearray()
    prev = None
    src = None
    for r in element_ranges(desc, element, lambda i, s, e: source(i).data[s:e]):
        if r.input != prev:
            src = source(r.input)
            out += src.root + b"".join(src.root_path)
            prev = r.input
        first, last = r.start // LEAF_BYTES, -(-r.end // LEAF_BYTES)
        p = range_proof(src.data, first, last, src.levels)
        out += p.leaves + b"".join(p.siblings)
    return bytes(out)


def _root_chain(ctx: StepContext, kind: SlotKind, index: int) -> tuple[int, int, bytes]:
    """(path length, leaf index in the chained tree, expected root) of a slot; raises if unagreed."""
    if kind == SlotKind.WEIGHT:
        if index >= ctx.num_weights:
            raise StepProofError(f"weight {index} outside a program of {ctx.num_weights} weights")
        return depth_for(ctx.num_weights) + 1, index, ctx.inputs_root
    if kind == SlotKind.UNIT_INPUT:
        if ctx.unit_index >= ctx.num_units:
            raise StepProofError(f"unit {ctx.unit_index} outside a job of {ctx.num_units} units")
        d = depth_for(ctx.num_units)
        return d + 1, ctx.unit_index | (1 << d), ctx.inputs_root
    if index >= ctx.op_index:
        raise StepProofError(f"trace slot {index} is not before the disputed op {ctx.op_index}")
    return depth_for(ctx.num_ops), index, ctx.trace_root


def open_proofs(ctx: StepContext, desc: OpDescriptor, element: int, proofs: bytes) -> list[bytes]:
    """Check a proofs blob exactly as Int8Verifier._open does and return the byte chunks of
    element_ranges(desc, element) (what compute_element takes). Raises StepProofError."""
    cur = 0

    def take(n: int) -> bytes:
        nonlocal cur
        if cur + n > len(proofs):
            raise StepProofError(f"proofs of {len(proofs)} bytes, need at least {cur + n}")
        cur += n
        return proofs[cur - n : cur]

    chunks = []
    prev = None
    root = b""
    depth = 0
    # gather's table range depends on the id: it is derived from the id's opened bytes (5.7.3)
    todo: list[ByteRange] = ([gather_id_range(desc, element)] if desc.opcode == Opcode.GATHER
                             else element_ranges(desc, element))
    for k, r in enumerate(todo):
        slot = desc.inputs[r.input]
        if r.input != prev:
            prev = r.input
            root = take(32)
            n, idx, want = _root_chain(ctx, slot.kind, slot.index)
            path = [take(32) for _ in range(n)]
            if not verify_inclusion(want, root, idx, path):
                raise StepProofError(f"input {r.input}: slot root does not chain to the agreed root")
            depth = tensor_depth(slot.type.nbytes)
        first, last = r.start // LEAF_BYTES, -(-r.end // LEAF_BYTES)
        leaves = take((last - first) * LEAF_BYTES)
        sibs = tuple(take(32) for _ in range(sibling_count(depth, first, last - 1)))
        if not verify_range(root, RangeProof(depth, first, last, leaves, sibs)):
            raise StepProofError(f"input {r.input}: range proof of leaves [{first}, {last}) fails")
        off = r.start - first * LEAF_BYTES
        chunks.append(leaves[off : off + r.end - r.start])
        if desc.opcode == Opcode.GATHER and k == 0:
            todo += gather_row(desc, element, chunks[0])
    if cur != len(proofs):
        raise StepProofError(f"proofs of {len(proofs)} bytes, the element needs {cur}")
    return chunks


class JobInputs:
    """The job's input tensors (weights in declaration order, unit inputs in unit order) with
    their trees and the two roots trees, computed on first use."""

    def __init__(self, weights: Sequence[bytes], unit_inputs: Sequence[bytes]) -> None:
        if not unit_inputs:
            raise ValueError("a job has at least one unit")
        self.weights = tuple(weights)
        self.unit_inputs = tuple(unit_inputs)
        self._levels: dict[tuple[int, int], list[list[bytes]]] = {}

    def levels(self, kind: SlotKind, i: int) -> list[list[bytes]]:
        key = (int(kind), i)
        if key not in self._levels:
            data = self.weights[i] if kind == SlotKind.WEIGHT else self.unit_inputs[i]
            self._levels[key] = tensor_levels(data)
        return self._levels[key]

    @cached_property
    def _weight_tree(self) -> list[list[bytes]] | None:
        if not self.weights:
            return None
        return roots_levels([self.levels(SlotKind.WEIGHT, w)[-1][0] for w in range(len(self.weights))])

    @cached_property
    def _unit_tree(self) -> list[list[bytes]]:
        return roots_levels([self.levels(SlotKind.UNIT_INPUT, u)[-1][0] for u in range(len(self.unit_inputs))])

    @property
    def weights_root(self) -> bytes:
        return self._weight_tree[-1][0] if self._weight_tree else ZERO32

    @property
    def unit_inputs_root(self) -> bytes:
        return self._unit_tree[-1][0]

    @property
    def inputs_root(self) -> bytes:
        return node_hash(self.weights_root, self.unit_inputs_root)

    def weight_source(self, w: int) -> SlotSource:
        path = inclusion_proof(self._weight_tree, w, roots_zero) if self._weight_tree else []
        return SlotSource(self.weights[w], self.levels(SlotKind.WEIGHT, w), (*path, self.unit_inputs_root))

    def unit_source(self, u: int) -> SlotSource:
        path = inclusion_proof(self._unit_tree, u, roots_zero)
        return SlotSource(self.unit_inputs[u], self.levels(SlotKind.UNIT_INPUT, u), (*path, self.weights_root))


class Int8Prover:
    """StepProver (gpumesh.node.dispute.strategy) for Int8Verifier. The challenger's own data:
    the job inputs it downloaded and, through `agreed`, its own trace of the disputed unit with
    slot paths against the WORKER's trace root."""

    def __init__(self, job: JobInputs) -> None:
        self.job = job

    def element_bytes(self, descriptor: bytes) -> int:
        return OpDescriptor.decode(descriptor).out.dtype.width

    def proofs(self, snap: GameSnapshot, descriptor: bytes, element_index: int, agreed: AgreedTrace) -> bytes:
        d = OpDescriptor.decode(descriptor)
        # the agreed op outputs this element reads, recomputed together by a streaming trace
        # (gather: every op-output input, as its table range depends on the id's bytes)
        reads = ([gather_id_range(d, element_index), ByteRange(1, 0, 0)] if d.opcode == Opcode.GATHER
                 else element_ranges(d, element_index))
        agreed.own.prefetch(sorted({d.inputs[r.input].index for r in reads
                                    if d.inputs[r.input].kind == SlotKind.OP_OUTPUT}))

        def source(i: int) -> SlotSource:
            s = d.inputs[i]
            if s.kind == SlotKind.WEIGHT:
                return self.job.weight_source(s.index)
            if s.kind == SlotKind.UNIT_INPUT:
                return self.job.unit_source(snap.unit_index)
            own = agreed.own
            return SlotSource(own.tensor(s.index), own.tensor_levels(s.index), tuple(agreed.slot_path(s.index)))

        blob = encode_proofs(d, element_index, source)
        # Pre-flight: a blob the contract would reject costs the challenger its clock, never the game.
        open_proofs(StepContext.from_snapshot(snap), d, element_index, blob)
        return blob

