"""Op descriptors of the v1 op set and their canonical binary encoding (docs/protocol.md 3.2-3.3).

Pure: no I/O. The binary form is what the program root commits and what the Solidity one-step
verifier decodes, so every field is fixed-width big-endian. Anyone may import this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from gpumesh.client.core.errors import ValidationError

MAX_RANK = 4


class ProgramError(ValidationError):
    """A program, descriptor or tensor breaks a rule of docs/protocol.md section 3 (one problem each)."""


class DType(IntEnum):
    INT8 = 1
    INT32 = 2

    @property
    def width(self) -> int:
        return 1 if self is DType.INT8 else 4

    @property
    def lo(self) -> int:
        return -(1 << (8 * self.width - 1))

    @property
    def hi(self) -> int:
        return (1 << (8 * self.width - 1)) - 1

    @classmethod
    def parse(cls, name: str) -> DType:
        try:
            return {"int8": cls.INT8, "int32": cls.INT32}[name]
        except KeyError:
            raise ProgramError(f"unknown dtype {name!r} (v1 has int8 and int32)") from None

    @property
    def label(self) -> str:
        return "int8" if self is DType.INT8 else "int32"


class SlotKind(IntEnum):
    WEIGHT = 0
    UNIT_INPUT = 1
    OP_OUTPUT = 2


class Opcode(IntEnum):
    LINEAR = 0x01
    REQUANT = 0x02
    ADD = 0x03
    RELU = 0x04
    IM2COL = 0x05
    MAXPOOL = 0x06
    AVGPOOL = 0x07
    ARGMAX = 0x08
    RESHAPE = 0x09
    TRANSPOSE = 0x0A
    # Chunked reductions (docs/protocol.md 2.2, 5.7.7): a reduction above the one-step bounds of 3.4
    # split into ops whose partial results are committed in the trace.
    CHUNKMAX = 0x0B
    PAIRARGMAX = 0x0C
    CHUNKSUM = 0x0D
    SUMREQUANT = 0x0E
    # Integer transformer ops (docs/protocol.md 2.2, issue #13).
    MATMUL = 0x0F
    LUT = 0x10
    MUL = 0x11
    GATHER = 0x12
    SOFTMAX = 0x13
    LAYERNORM = 0x14
    ROPE = 0x15
    TOPK = 0x16
    # Views (docs/protocol.md 2.2.5): pure index remaps, like reshape and transpose.
    CONCAT = 0x17
    SLICE = 0x18

    @classmethod
    def parse(cls, name: str) -> Opcode:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ProgramError(f"unknown op {name!r}") from None


#: Opcodes whose attributes carry a REQ block.
REQ_OPS = (Opcode.LINEAR, Opcode.REQUANT, Opcode.AVGPOOL, Opcode.SUMREQUANT, Opcode.MATMUL, Opcode.MUL,
           Opcode.LAYERNORM, Opcode.ROPE)


class ReqMode(IntEnum):
    NONE = 0
    PER_TENSOR = 1
    PER_CHANNEL = 2


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.shape) <= MAX_RANK:
            raise ProgramError(f"rank {len(self.shape)} outside 1..{MAX_RANK}")
        if any(d < 1 or d >= 1 << 32 for d in self.shape):
            raise ProgramError(f"shape {list(self.shape)} has a dim outside 1..2^32-1")

    def __str__(self) -> str:
        return f"{self.dtype.label}{list(self.shape)}"

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.width

    def encode(self) -> bytes:
        dims = list(self.shape) + [1] * (MAX_RANK - len(self.shape))
        return struct.pack(">BB4I", self.dtype, len(self.shape), *dims)

    @classmethod
    def decode(cls, b: bytes) -> TensorType:
        dt, rank, *dims = struct.unpack(">BB4I", b)
        if dt not in (1, 2):
            raise ProgramError(f"unknown dtype code {dt}")
        if not 1 <= rank <= MAX_RANK or any(d != 1 for d in dims[rank:]):
            raise ProgramError("non-canonical tensor type (rank or unused dims)")
        return cls(DType(dt), tuple(dims[:rank]))

    def to_json(self) -> dict:
        return {"dtype": self.dtype.label, "shape": list(self.shape)}


TENSOR_TYPE_BYTES = 18
SLOT_BYTES = 23


@dataclass(frozen=True)
class SlotRef:
    kind: SlotKind
    index: int
    type: TensorType

    def encode(self) -> bytes:
        return struct.pack(">BI", self.kind, self.index) + self.type.encode()

    @classmethod
    def decode(cls, b: bytes) -> SlotRef:
        kind, index = struct.unpack(">BI", b[:5])
        if kind > 2:
            raise ProgramError(f"unknown slot kind {kind}")
        if kind == SlotKind.UNIT_INPUT and index != 0:
            raise ProgramError("a UNIT_INPUT slot has index 0")
        return cls(SlotKind(kind), index, TensorType.decode(b[5:SLOT_BYTES]))


@dataclass(frozen=True)
class Requant:
    """Requantization parameters (REQ block). mode PER_CHANNEL reads (mult, shift) rows from the
    op's last input; mult and shift inline are then 0."""

    mode: ReqMode = ReqMode.NONE
    mult: int = 0
    shift: int = 0
    zp: int = 0
    lo: int = 0
    hi: int = 0

    def encode(self) -> bytes:
        return struct.pack(">BiBbbb", self.mode, self.mult, self.shift, self.zp, self.lo, self.hi)

    @classmethod
    def decode(cls, b: bytes) -> Requant:
        mode, mult, shift, zp, lo, hi = struct.unpack(">BiBbbb", b)
        if mode > 2:
            raise ProgramError(f"unknown requant mode {mode}")
        return cls(ReqMode(mode), mult, shift, zp, lo, hi)

    def check(self) -> None:
        if self.mode == ReqMode.NONE:
            if (self.mult, self.shift, self.zp, self.lo, self.hi) != (0, 0, 0, 0, 0):
                raise ProgramError("requant mode none must have all fields 0")
            return
        if self.mode == ReqMode.PER_CHANNEL and (self.mult, self.shift) != (0, 0):
            raise ProgramError("per-channel requant keeps mult and shift inline at 0")
        if self.mode == ReqMode.PER_TENSOR:
            check_mult_shift(self.mult, self.shift)
        if not -128 <= self.lo <= self.hi <= 127:
            raise ProgramError(f"requant clamp [{self.lo}, {self.hi}] not inside [-128, 127]")

    def to_json(self) -> dict:
        return {"mode": self.mode.name.lower(), "mult": self.mult, "shift": self.shift,
                "zp": self.zp, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_json(cls, d: dict) -> Requant:
        try:
            mode = ReqMode[str(d.get("mode", "none")).upper()]
        except KeyError:
            raise ProgramError(f"unknown requant mode {d.get('mode')!r}") from None
        return cls(mode, int(d.get("mult", 0)), int(d.get("shift", 0)), int(d.get("zp", 0)),
                    int(d.get("lo", 0)), int(d.get("hi", 0)))


def check_mult_shift(mult: int, shift: int) -> None:
    if not 0 <= mult <= (1 << 31) - 1:
        raise ProgramError(f"requant multiplier {mult} outside [0, 2^31-1]")
    if not 1 <= shift <= 62:
        raise ProgramError(f"requant shift {shift} outside [1, 62]")


# Attribute layouts per opcode: (struct format, field names). REQ fields are flattened with a
# "req_" prefix so every descriptor is one flat struct after its slots.
_REQ_FMT, _REQ_FIELDS = "BiBbbb", ("req_mode", "req_mult", "req_shift", "req_zp", "req_lo", "req_hi")
_WIN = ("kh", "kw", "sh", "sw", "ph", "pw")
ATTR_LAYOUT: dict[Opcode, tuple[str, tuple[str, ...]]] = {
    Opcode.LINEAR: ("b" + _REQ_FMT, ("x_zp", *_REQ_FIELDS)),
    Opcode.REQUANT: (_REQ_FMT, _REQ_FIELDS),
    Opcode.ADD: ("bbiiBbbb", ("za", "zb", "ma", "mb", "shift", "zy", "lo", "hi")),
    Opcode.RELU: ("b", ("zp",)),
    Opcode.IM2COL: ("6Hb", (*_WIN, "pad")),
    Opcode.MAXPOOL: ("6H", _WIN),
    Opcode.AVGPOOL: ("b" + _REQ_FMT, ("x_zp", *_REQ_FIELDS)),
    Opcode.ARGMAX: ("", ()),
    Opcode.RESHAPE: ("", ()),
    Opcode.TRANSPOSE: ("4B", ("p0", "p1", "p2", "p3")),
    Opcode.CHUNKMAX: ("IB", ("q", "pairs")),
    Opcode.PAIRARGMAX: ("", ()),
    Opcode.CHUNKSUM: ("bI", ("x_zp", "q")),
    Opcode.SUMREQUANT: (_REQ_FMT, _REQ_FIELDS),
    Opcode.MATMUL: ("BBbb" + _REQ_FMT, ("ta", "tb", "za", "zb", *_REQ_FIELDS)),
    Opcode.LUT: ("", ()),
    Opcode.MUL: ("bb" + _REQ_FMT, ("za", "zb", *_REQ_FIELDS)),
    Opcode.GATHER: ("", ()),
    Opcode.SOFTMAX: ("BI", ("causal", "off")),
    Opcode.LAYERNORM: ("bBI" + _REQ_FMT, ("x_zp", "rms", "eps", *_REQ_FIELDS)),
    Opcode.ROPE: ("bI" + _REQ_FMT, ("x_zp", "off", *_REQ_FIELDS)),
    Opcode.TOPK: ("IIB", ("k", "q", "pairs")),
    Opcode.CONCAT: ("B", ("axis",)),
    Opcode.SLICE: ("BII", ("axis", "start", "len")),
}


#: Value range of each struct field character used in ATTR_LAYOUT.
_FIELD_RANGE = {"b": (-(2**7), 2**7 - 1), "B": (0, 2**8 - 1), "h": (-(2**15), 2**15 - 1), "H": (0, 2**16 - 1),
                "i": (-(2**31), 2**31 - 1), "I": (0, 2**32 - 1), "q": (-(2**63), 2**63 - 1), "Q": (0, 2**64 - 1)}


def _field_chars(fmt: str) -> list[str]:
    """'6Hb' -> ['H'] * 6 + ['b']: one format character per attribute."""
    out, count = [], ""
    for ch in fmt:
        if ch.isdigit():
            count += ch
        else:
            out += [ch] * int(count or 1)
            count = ""
    return out


def attr_size(op: Opcode) -> int:
    return struct.calcsize(">" + ATTR_LAYOUT[op][0])


@dataclass(frozen=True)
class OpDescriptor:
    """One op: opcode, input slots, output type and flat attributes (names per ATTR_LAYOUT)."""

    opcode: Opcode
    inputs: tuple[SlotRef, ...]
    out: TensorType
    attrs: tuple[tuple[str, int], ...]

    def attr(self, name: str) -> int:
        for k, v in self.attrs:
            if k == name:
                return v
        raise KeyError(name)

    @property
    def requant(self) -> Requant:
        a = dict(self.attrs)
        return Requant(ReqMode(a["req_mode"]), a["req_mult"], a["req_shift"], a["req_zp"],
                       a["req_lo"], a["req_hi"])

    @property
    def perm(self) -> tuple[int, ...]:
        a = dict(self.attrs)
        return tuple(a[f"p{i}"] for i in range(len(self.inputs[0].type.shape)))

    def encode(self) -> bytes:
        fmt, names = ATTR_LAYOUT[self.opcode]
        a = dict(self.attrs)
        if set(a) != set(names):
            raise ProgramError(f"{self.opcode.name.lower()} attributes must be exactly {list(names)}")
        try:
            attrs = struct.pack(">" + fmt, *(a[n] for n in names))
        except struct.error as exc:
            for ch, n in zip(_field_chars(fmt), names, strict=True):
                lo, hi = _FIELD_RANGE[ch]
                if not isinstance(a[n], int) or not lo <= a[n] <= hi:
                    raise ProgramError(f"{self.opcode.name.lower()} attribute {n} = {a[n]!r} is outside "
                                       f"[{lo}, {hi}]") from None
            raise ProgramError(f"{self.opcode.name.lower()} attribute out of its field range: {exc}") from None
        head = struct.pack(">BB", self.opcode, len(self.inputs))
        return head + b"".join(s.encode() for s in self.inputs) + self.out.encode() + attrs

    @classmethod
    def decode(cls, b: bytes) -> OpDescriptor:
        if len(b) < 2:
            raise ProgramError("descriptor shorter than its header")
        code, n_in = b[0], b[1]
        try:
            op = Opcode(code)
        except ValueError:
            raise ProgramError(f"unknown opcode 0x{code:02x}") from None
        o = 2 + SLOT_BYTES * n_in
        if len(b) != o + TENSOR_TYPE_BYTES + attr_size(op):
            raise ProgramError(f"descriptor of {op.name.lower()} has the wrong length {len(b)}")
        slots = tuple(SlotRef.decode(b[2 + SLOT_BYTES * i : 2 + SLOT_BYTES * (i + 1)]) for i in range(n_in))
        out = TensorType.decode(b[o : o + TENSOR_TYPE_BYTES])
        fmt, names = ATTR_LAYOUT[op]
        vals = struct.unpack(">" + fmt, b[o + TENSOR_TYPE_BYTES :])
        return cls(op, slots, out, tuple(zip(names, vals, strict=True)))


def make_attrs(op: Opcode, **values: int) -> tuple[tuple[str, int], ...]:
    """Attribute tuple in canonical order; `requant=Requant(...)` expands to the req_* fields and
    `perm=(...)` to p0..p3 (unused entries = their own index)."""
    req = values.pop("requant", None)
    if req is not None:
        values.update(zip(_REQ_FIELDS, (req.mode, req.mult, req.shift, req.zp, req.lo, req.hi), strict=True))
    perm = values.pop("perm", None)
    if perm is not None:
        full = list(perm) + list(range(len(perm), MAX_RANK))
        values.update({f"p{i}": p for i, p in enumerate(full)})
    names = ATTR_LAYOUT[op][1]
    missing = [n for n in names if n not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        raise ProgramError(f"{op.name.lower()} attributes: missing {missing}, unexpected {extra}")
    return tuple((n, int(values[n])) for n in names)
