"""What a prover needs for the one-step of a dispute: for one element of one op of a traced unit,
the op descriptor, every input byte range the scalar reference reads (gpumesh.client.core.ops.
reference.element_ranges), each as a Merkle range proof against its slot's tensor root, and the
slot root's inclusion proof (weights root, trace root; unit inputs root when the caller has them).

Adapter layer (used by the dispute code with a Trace from the executor); pure apart from types.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpumesh.client.core import merkle
from gpumesh.client.core.constants import LEAF_BYTES, ZERO32
from gpumesh.client.core.ops.reference import ByteRange, compute_element, element_ranges
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.node.runtime.executor import Trace
from gpumesh.node.runtime.files import ProgramBundle


@dataclass(frozen=True)
class RangeOpening:
    range: ByteRange
    slot_root: bytes
    proof: merkle.RangeProof  # leaves [start // LEAF_BYTES, ceil(end / LEAF_BYTES))
    root_proof: tuple[bytes, ...]  # inclusion of slot_root in its roots tree (weights / unit inputs / trace)


@dataclass(frozen=True)
class ElementProof:
    op_index: int
    element: int
    descriptor: bytes
    descriptor_proof: tuple[bytes, ...]  # opLeaf inclusion in opsRoot
    value: int
    openings: tuple[RangeOpening, ...]


def _roots_proof(values: list[bytes], index: int) -> tuple[bytes, ...]:
    zeros = [ZERO32]

    def pad(h: int) -> bytes:
        while len(zeros) <= h:
            zeros.append(merkle.node_hash(zeros[-1], zeros[-1]))
        return zeros[h]

    return tuple(merkle.inclusion_proof(merkle.roots_levels(values), index, pad))


def element_proof(bundle: ProgramBundle, trace: Trace, op_index: int, element: int,
                  unit_input_roots: list[bytes] | None = None, unit_index: int = 0) -> ElementProof:
    prog = bundle.program
    d = prog.ops[op_index].desc
    descs = prog.descriptors()
    weight_roots = [merkle.tensor_root(bundle.weight_bytes[w.name]) for w in prog.weights]
    openings = []
    chunks = []

    def slot_bytes(k: int) -> bytes:
        s = d.inputs[k]
        if s.kind == SlotKind.WEIGHT:
            return bundle.weight_bytes[prog.weights[s.index].name]
        return trace.unit_input if s.kind == SlotKind.UNIT_INPUT else trace.outputs[s.index]

    # gather's table range follows from its id's bytes: the reader gives them from the same slots
    for r in element_ranges(d, element, lambda k, a, b: slot_bytes(k)[a:b]):
        s = d.inputs[r.input]
        data = slot_bytes(r.input)
        if s.kind == SlotKind.WEIGHT:
            levels = merkle.tensor_levels(data)
            root_proof = _roots_proof(weight_roots, s.index)
        elif s.kind == SlotKind.UNIT_INPUT:
            levels = merkle.tensor_levels(data)
            root_proof = _roots_proof(unit_input_roots, unit_index) if unit_input_roots else ()
        else:
            levels = trace.levels[s.index]
            root_proof = _roots_proof(list(trace.roots), s.index)
        first, last = r.start // LEAF_BYTES, -(-r.end // LEAF_BYTES)
        proof = merkle.range_proof(data, first, last, levels)
        openings.append(RangeOpening(r, levels[-1][0], proof, root_proof))
        chunks.append(data[r.start : r.end])
    value = compute_element(d, element, chunks)
    return ElementProof(op_index, element, descs[op_index],
                        _roots_proof([merkle.op_leaf(b) for b in descs], op_index), value, tuple(openings))


def opened_bytes(p: ElementProof) -> list[bytes]:
    """The bytes of each opening's range, in element_ranges order (what compute_element takes),
    each taken from leaves whose range proof verifies against its slot root; raises ValueError
    on one that does not."""
    chunks = []
    for o in p.openings:
        if not merkle.verify_range(o.slot_root, o.proof):
            raise ValueError(f"op {p.op_index} element {p.element}: the range proof of input {o.range.input} fails")
        off = o.proof.start * LEAF_BYTES
        chunks.append(o.proof.leaves[o.range.start - off : o.range.end - off])
    return chunks
