"""Program format v1 (docs/protocol.md section 3): the human JSON form, validation with one clear error per
problem, the binary op descriptors and the program root; plus the job-level commitments built on
them (inputs root, result root, trace root) via gpumesh.client.core.merkle.

Pure: takes and returns bytes and dicts; reading files is the runtime's job. Anyone may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpumesh.client.core import merkle
from gpumesh.client.core.constants import PROGRAM_VERSION
from gpumesh.client.core.ops.intmath import from_le
from gpumesh.client.core.ops.rules import check_descriptor, check_qp_rows, expected_out
from gpumesh.client.core.ops.types import (
    REQ_OPS,
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

FORMAT = "gpumesh.program"
MAX_OPS = 4096
MAX_WEIGHTS = 4096


@dataclass(frozen=True)
class TensorDecl:
    name: str
    type: TensorType


@dataclass(frozen=True)
class OpEntry:
    name: str
    desc: OpDescriptor
    input_names: tuple[str, ...]


@dataclass(frozen=True)
class Program:
    input: TensorDecl
    weights: tuple[TensorDecl, ...]
    ops: tuple[OpEntry, ...]
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def output_type(self) -> TensorType:
        return self.ops[-1].desc.out

    def weight_index(self, name: str) -> int:
        for i, w in enumerate(self.weights):
            if w.name == name:
                return i
        raise ProgramError(f"no weight named {name!r}")

    def descriptors(self) -> list[bytes]:
        return [op.desc.encode() for op in self.ops]

    def root(self) -> bytes:
        leaves = [merkle.op_leaf(b) for b in self.descriptors()]
        return merkle.program_root(PROGRAM_VERSION, len(self.ops), len(self.weights), merkle.roots_root(leaves))

    def validate(self) -> None:
        validate(self)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": PROGRAM_VERSION,
            "input": {"name": self.input.name, **self.input.type.to_json()},
            "weights": [{"name": w.name, **w.type.to_json()} for w in self.weights],
            "ops": [_op_json(o) for o in self.ops],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, obj: dict) -> Program:
        return from_json(obj)


def _ttype(d: dict, what: str) -> TensorType:
    if not isinstance(d, dict) or "dtype" not in d or "shape" not in d:
        raise ProgramError(f"{what}: needs dtype and shape")
    shape = d["shape"]
    if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        raise ProgramError(f"{what}: shape must be a list of integers")
    try:
        return TensorType(DType.parse(d["dtype"]), tuple(shape))
    except ProgramError as exc:
        raise ProgramError(f"{what}: {exc}") from None


def _op_json(o: OpEntry) -> dict:
    d = o.desc
    a = dict(d.attrs)
    attrs: dict = {}
    if "req_mode" in a:
        attrs["requant"] = d.requant.to_json()
        attrs.update({k: v for k, v in a.items() if not k.startswith("req_")})
    elif d.opcode == Opcode.TRANSPOSE:
        attrs["perm"] = list(d.perm)
    else:
        attrs = a
    return {"name": o.name, "op": d.opcode.name.lower(), "inputs": list(o.input_names),
            "out": d.out.to_json(), "attrs": attrs}


def from_json(obj: dict) -> Program:
    """Parse and validate the human form (resolving names to slots)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ProgramError(f"not a program: format must be {FORMAT!r}")
    if obj.get("version") != PROGRAM_VERSION:
        raise ProgramError(f"program version {obj.get('version')!r} is not {PROGRAM_VERSION}")
    for key in ("input", "weights", "ops"):
        if key not in obj:
            raise ProgramError(f"program has no {key!r}")
    inp = TensorDecl(str(obj["input"].get("name", "")), _ttype(obj["input"], "input"))
    if not isinstance(obj["weights"], list) or not isinstance(obj["ops"], list):
        raise ProgramError("weights and ops must be lists")
    weights = tuple(TensorDecl(str(w.get("name", "")), _ttype(w, f"weight {w.get('name')!r}")) for w in obj["weights"])
    slots: dict[str, SlotRef] = {inp.name: SlotRef(SlotKind.UNIT_INPUT, 0, inp.type)}
    seen = {inp.name}
    for i, w in enumerate(weights):
        if w.name in seen or not w.name:
            raise ProgramError(f"weight {i}: name {w.name!r} empty or used twice")
        seen.add(w.name)
        slots[w.name] = SlotRef(SlotKind.WEIGHT, i, w.type)
    ops = []
    for j, o in enumerate(obj["ops"]):
        where = f"op {j} ({o.get('name')!r})" if isinstance(o, dict) else f"op {j}"
        try:
            entry = _parse_op(o, slots)
        except ProgramError as exc:
            raise ProgramError(f"{where}: {exc}") from None
        if entry.name in seen or not entry.name:
            raise ProgramError(f"{where}: name empty or used twice")
        seen.add(entry.name)
        slots[entry.name] = SlotRef(SlotKind.OP_OUTPUT, j, entry.desc.out)
        ops.append(entry)
    prog = Program(inp, weights, tuple(ops), dict(obj.get("meta") or {}))
    validate(prog)
    return prog


def _parse_op(o: dict, slots: dict[str, SlotRef]) -> OpEntry:
    opcode = Opcode.parse(str(o.get("op", "")))
    names = tuple(o.get("inputs", ()))
    refs = []
    for n in names:
        if n not in slots:
            raise ProgramError(f"input {n!r} is not the unit input, a weight or an earlier op")
        refs.append(slots[n])
    raw = dict(o.get("attrs") or {})
    if "requant" in raw:
        raw["requant"] = Requant.from_json(raw["requant"])
    elif opcode in REQ_OPS:
        raw["requant"] = Requant()
    if opcode == Opcode.TRANSPOSE and "perm" in raw:
        raw["perm"] = tuple(raw["perm"])
    attrs = make_attrs(opcode, **raw)
    if "out" in o:
        out = _ttype(o["out"], "out")
    else:  # the rule decides; reshape must say where it goes
        if opcode == Opcode.RESHAPE:
            raise ProgramError("reshape needs its out type")
        out = expected_out(OpDescriptor(opcode, tuple(refs), TensorType(DType.INT8, (1,)), attrs))
    desc = OpDescriptor(opcode, tuple(refs), out, attrs)
    desc.encode()  # field widths
    check_descriptor(desc)
    return OpEntry(str(o.get("name", "")), desc, names)


def validate(p: Program) -> None:
    """Program-level rules (the per-op rules run in check_descriptor)."""
    if not 1 <= len(p.ops) <= MAX_OPS:
        raise ProgramError(f"a program has 1..{MAX_OPS} ops, this one {len(p.ops)}")
    if len(p.weights) > MAX_WEIGHTS:
        raise ProgramError(f"a program has at most {MAX_WEIGHTS} weights")
    if p.input.type.dtype != DType.INT8:
        raise ProgramError("the unit input must be int8")
    for j, op in enumerate(p.ops):
        for s in op.desc.inputs:
            if s.kind == SlotKind.OP_OUTPUT and not (s.index < j and p.ops[s.index].desc.out == s.type):
                raise ProgramError(f"op {j}: slot refers to op {s.index} wrongly (forward or type mismatch)")
            if s.kind == SlotKind.WEIGHT and not (s.index < len(p.weights) and p.weights[s.index].type == s.type):
                raise ProgramError(f"op {j}: slot refers to weight {s.index} wrongly (missing or type mismatch)")
            if s.kind == SlotKind.UNIT_INPUT and s.type != p.input.type:
                raise ProgramError(f"op {j}: unit input slot type differs from the program input")
        check_descriptor(op.desc)


def qp_weights(p: Program) -> set[int]:
    """Indices of weights used as per-channel (mult, shift) tables (their values are range-checked)."""
    out = set()
    for op in p.ops:
        a = dict(op.desc.attrs)
        if a.get("req_mode") == ReqMode.PER_CHANNEL:
            out.add(op.desc.inputs[-1].index)
    return out


def check_weight_values(p: Program, weights: dict[str, bytes]) -> None:
    """Byte lengths of every weight and the ranges of per-channel requant tables."""
    for i, w in enumerate(p.weights):
        b = weights.get(w.name)
        if b is None:
            raise ProgramError(f"weight {w.name!r} missing from the weights file")
        if len(b) != w.type.nbytes:
            raise ProgramError(f"weight {w.name!r}: {len(b)} bytes, declared {w.type}")
        if i in qp_weights(p):
            v = from_le(b, 4)
            check_qp_rows(list(zip(v[0::2], v[1::2], strict=True)))


# Job-level commitments (docs/protocol.md 1.2) ---------------------------------------------------


def weights_roots(p: Program, weights: dict[str, bytes]) -> list[bytes]:
    return [merkle.tensor_root(weights[w.name]) for w in p.weights]


def inputs_root(p: Program, weights: dict[str, bytes], unit_inputs: list[bytes]) -> bytes:
    return merkle.inputs_root(weights_roots(p, weights), [merkle.tensor_root(u) for u in unit_inputs])


def result_root(unit_output_roots: list[bytes]) -> bytes:
    return merkle.roots_root(unit_output_roots)


def trace_root(op_output_roots: list[bytes]) -> bytes:
    return merkle.roots_root(op_output_roots)
