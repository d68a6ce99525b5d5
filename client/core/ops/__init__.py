"""The v1 op set: descriptor types and binary encoding (types), typing rules (rules), integer
arithmetic (intmath) and the scalar reference (reference). Pure; anyone may import it."""

from gpumesh.client.core.ops.reference import ByteRange, compute_element, element_ranges, run_op
from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    ProgramError,
    ReqMode,
    Requant,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)

__all__ = [
    "ByteRange", "DType", "Opcode", "OpDescriptor", "ProgramError", "ReqMode", "Requant", "SlotKind",
    "SlotRef", "TensorType", "compute_element", "element_ranges", "make_attrs", "run_op",
]
