"""Typing rules of every op (docs/protocol.md 3.3-3.4): the output type an op must declare for
its inputs and attributes, and the range checks on attributes. One ProgramError per problem.

Pure; used by program validation, the scalar reference and the executor. Anyone may import it.
"""

from __future__ import annotations

from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    ProgramError,
    ReqMode,
    SlotKind,
    TensorType,
    check_mult_shift,
)

MAX_K = 65536
MAX_POOL_AREA = 1 << 23
MAX_TENSOR_BYTES = 1 << 28

I8, I32 = DType.INT8, DType.INT32


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ProgramError(msg)


def window_out(size: int, k: int, s: int, p: int, what: str) -> int:
    _need(k >= 1 and s >= 1, f"{what}: kernel and stride must be >= 1")
    span = size + 2 * p - k
    _need(span >= 0, f"{what}: kernel {k} larger than padded input {size + 2 * p}")
    return span // s + 1


def n_inputs(desc_op: Opcode, req_mode: ReqMode | None) -> int:
    base = {Opcode.LINEAR: 3, Opcode.ADD: 2}.get(desc_op, 1)
    return base + (1 if req_mode == ReqMode.PER_CHANNEL else 0)


def expected_out(d: OpDescriptor) -> TensorType:
    """The output type the op's rule gives for its inputs; raises on any input/attribute problem."""
    op = d.opcode
    name = op.name.lower()
    mode = d.requant.mode if op in (Opcode.LINEAR, Opcode.REQUANT, Opcode.AVGPOOL) else None
    _need(len(d.inputs) == n_inputs(op, mode),
          f"{name} takes {n_inputs(op, mode)} inputs, got {len(d.inputs)}")
    t = [s.type for s in d.inputs]
    x = t[0]
    if mode is not None:
        d.requant.check()
    if mode == ReqMode.PER_CHANNEL:
        qp = d.inputs[-1]
        _need(qp.kind == SlotKind.WEIGHT, f"{name}: per-channel parameters must be a weight")
    if op == Opcode.LINEAR:
        _need(x.dtype == I8 and 2 <= len(x.shape) <= 4, f"linear: x must be int8 of rank 2..4, got {x}")
        w, b = t[1], t[2]
        _need(w.dtype == I8 and len(w.shape) == 2, "linear: W must be int8 [N, K]")
        k, n = x.shape[-1], w.shape[0]
        _need(w.shape[1] == k, f"linear: W is {list(w.shape)} but x has K = {k}")
        _need(k <= MAX_K, f"linear: K = {k} above the limit {MAX_K}")
        _need(b == TensorType(I32, (n,)), f"linear: bias must be int32 [{n}]")
        _qp_check(d, n)
        return TensorType(I32 if mode == ReqMode.NONE else I8, x.shape[:-1] + (n,))
    if op == Opcode.REQUANT:
        _need(x.dtype == I32, "requant: input must be int32")
        _need(mode != ReqMode.NONE, "requant: mode must be per_tensor or per_channel")
        _qp_check(d, x.shape[-1])
        return TensorType(I8, x.shape)
    if op == Opcode.ADD:
        _need(x.dtype == I8 and t[1] == x, f"add: inputs must be int8 of one shape, got {t[0]} and {t[1]}")
        check_mult_shift(d.attr("ma"), d.attr("shift"))
        check_mult_shift(d.attr("mb"), d.attr("shift"))
        _need(-128 <= d.attr("lo") <= d.attr("hi") <= 127, "add: clamp outside [-128, 127]")
        return x
    if op == Opcode.RELU:
        _need(x.dtype == I8, "relu: input must be int8")
        return x
    if op in (Opcode.IM2COL, Opcode.MAXPOOL):
        _need(x.dtype == I8 and len(x.shape) == 4, f"{name}: input must be int8 [N,H,W,C]")
        nb, h, w_, c = x.shape
        oh = window_out(h, d.attr("kh"), d.attr("sh"), d.attr("ph"), name)
        ow = window_out(w_, d.attr("kw"), d.attr("sw"), d.attr("pw"), name)
        cols = d.attr("kh") * d.attr("kw") * c if op == Opcode.IM2COL else c
        return TensorType(I8, (nb, oh, ow, cols))
    if op == Opcode.AVGPOOL:
        _need(x.dtype == I8 and len(x.shape) == 4, "avgpool: input must be int8 [N,H,W,C]")
        _need(mode == ReqMode.PER_TENSOR, "avgpool: requant must be per_tensor")
        _need(x.shape[1] * x.shape[2] <= MAX_POOL_AREA, "avgpool: H*W above 2^23")
        return TensorType(I8, (x.shape[0], x.shape[3]))
    if op == Opcode.ARGMAX:
        return TensorType(I32, x.shape[:-1] if len(x.shape) > 1 else (1,))
    if op == Opcode.RESHAPE:
        _need(d.out.dtype == x.dtype and d.out.count == x.count,
              f"reshape: {x} -> {d.out} changes the dtype or element count")
        return d.out
    if op == Opcode.TRANSPOSE:
        r = len(x.shape)
        full = [d.attr(f"p{i}") for i in range(4)]
        _need(sorted(full[:r]) == list(range(r)) and full[r:] == list(range(r, 4)),
              f"transpose: perm {full} is not a canonical permutation of rank {r}")
        return TensorType(x.dtype, tuple(x.shape[p] for p in full[:r]))
    raise ProgramError(f"unknown op {op!r}")  # pragma: no cover - Opcode is closed


def _qp_check(d: OpDescriptor, channels: int) -> None:
    if d.requant.mode == ReqMode.PER_CHANNEL:
        qp = d.inputs[-1].type
        _need(qp == TensorType(I32, (channels, 2)),
              f"{d.opcode.name.lower()}: per-channel parameters must be int32 [{channels}, 2], got {qp}")


def check_descriptor(d: OpDescriptor) -> None:
    """All rules of one descriptor taken alone (slot ordering is the program's business)."""
    want = expected_out(d)
    if d.out != want:
        raise ProgramError(f"{d.opcode.name.lower()}: output declared {d.out}, the rule gives {want}")
    for s in (*d.inputs, d.out):
        ty = s.type if hasattr(s, "type") else s
        if ty.nbytes > MAX_TENSOR_BYTES:
            raise ProgramError(f"{d.opcode.name.lower()}: tensor of {ty.nbytes} bytes above 2^28")


def check_qp_rows(rows: list[tuple[int, int]]) -> None:
    """Per-channel (mult, shift) rows of a weight tensor, checked when the weights are loaded."""
    for mult, shift in rows:
        check_mult_shift(mult, shift)
