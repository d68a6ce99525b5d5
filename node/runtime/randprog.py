"""Random single-op cases of every opcode (shapes, attributes, quantization parameters and values
drawn at random, with edge-value modes), for the property tests, the test-vector generator and the
GPU check. `draw(lo, hi)` returns an int in [lo, hi] (Hypothesis `data.draw(st.integers(lo, hi))`
in tests, a numpy Generator elsewhere), so Hypothesis can shrink shapes and attributes.

Numpy only (no torch); test support, imported by tests, bench/gpu_check.py and gen_vectors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpumesh.client.core.ops.rules import expected_out
from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    ReqMode,
    Requant,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)

Draw = Callable[[int, int], int]


@dataclass(frozen=True)
class OpCase:
    desc: OpDescriptor
    inputs: tuple[np.ndarray, ...]  # one array per descriptor input, in order


def values(draw: Draw, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    """Values with an edge mode: full range, extremes only, near zero, or constant (ties)."""
    rng = np.random.default_rng(draw(0, 2**32 - 1))
    mode = draw(0, 3)
    lo, hi = dtype.lo, dtype.hi
    if dtype == DType.INT32:  # keep bias/accumulators mostly moderate, sometimes extreme
        lo, hi = (lo, hi) if mode == 1 else (-(2**24), 2**24)
    if mode == 1:
        a = rng.choice(np.array([lo, hi, lo + 1, hi - 1, 0], dtype=np.int64), size=shape)
    elif mode == 2:
        a = rng.integers(-3, 4, size=shape)
    elif mode == 3:
        a = np.full(shape, rng.integers(lo, hi + 1))
    else:
        a = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
    return a.astype(np.int8 if dtype == DType.INT8 else np.int32)


def multiplier(draw: Draw, small: bool) -> tuple[int, int]:
    """(mult, shift): any int32 multiplier and shift 1..62, or (small) the export's kind, m =
    mult * 2^-shift <= 1 with shift <= 23 (the executor's int32 requant form)."""
    if small:
        shift = draw(1, 23)
        return draw(0, 1 << shift), shift
    return draw(0, 2**31 - 1), draw(1, 62)


def requant_params(draw: Draw, mode: ReqMode) -> Requant:
    lo = draw(-128, 127)
    hi = draw(lo, 127)
    if mode == ReqMode.PER_TENSOR:
        return Requant(mode, *multiplier(draw, bool(draw(0, 1))), draw(-128, 127), lo, hi)
    return Requant(mode, 0, 0, draw(-128, 127), lo, hi)


def qp_rows(draw: Draw, channels: int) -> np.ndarray:
    """Per-channel (mult, shift) rows: all of the export's kind with one shared shift, or any."""
    if draw(0, 1):
        shift = draw(1, 23)
        return np.array([[draw(0, 1 << shift), shift] for _ in range(channels)], dtype=np.int32)
    return np.array([multiplier(draw, False) for _ in range(channels)], dtype=np.int32)


def _slot(k: int, t: TensorType) -> SlotRef:
    return SlotRef(SlotKind.UNIT_INPUT if k == 0 else SlotKind.WEIGHT, 0 if k == 0 else k - 1, t)


def _case(op: Opcode, types: list[TensorType], arrays: list[np.ndarray], out: TensorType | None = None,
          **attrs) -> OpCase:
    slots = tuple(_slot(k, t) for k, t in enumerate(types))
    a = make_attrs(op, **attrs)
    placeholder = OpDescriptor(op, slots, out or TensorType(DType.INT8, (1,)), a)
    desc = OpDescriptor(op, slots, out or expected_out(placeholder), a)
    return OpCase(desc, tuple(arrays))


def random_case(draw: Draw, op: Opcode, max_dim: int = 6, max_k: int = 300) -> OpCase:
    I8, I32 = DType.INT8, DType.INT32
    if op == Opcode.LINEAR:
        lead = tuple(draw(1, max_dim) for _ in range(draw(1, 3)))
        k, n = draw(1, max_k), draw(1, 2 * max_dim)
        mode = ReqMode(draw(0, 2))
        x, w, b = TensorType(I8, (*lead, k)), TensorType(I8, (n, k)), TensorType(I32, (n,))
        types, arrs = [x, w, b], [values(draw, x.shape, I8), values(draw, w.shape, I8), values(draw, b.shape, I32)]
        if mode == ReqMode.PER_CHANNEL:
            types.append(TensorType(I32, (n, 2)))
            arrs.append(qp_rows(draw, n))
        req = requant_params(draw, mode) if mode else Requant()
        return _case(op, types, arrs, x_zp=draw(-128, 127), requant=req)
    if op == Opcode.REQUANT:
        shape = tuple(draw(1, max_dim) for _ in range(draw(1, 4)))
        mode = ReqMode(draw(1, 2))
        types, arrs = [TensorType(I32, shape)], [values(draw, shape, I32)]
        if mode == ReqMode.PER_CHANNEL:
            types.append(TensorType(I32, (shape[-1], 2)))
            arrs.append(qp_rows(draw, shape[-1]))
        return _case(op, types, arrs, requant=requant_params(draw, mode))
    if op == Opcode.ADD:
        shape = tuple(draw(1, max_dim) for _ in range(draw(1, 4)))
        t = TensorType(I8, shape)
        lo = draw(-128, 127)
        if draw(0, 1):  # the export's kind: m <= 2 over a shift <= 22 (kernels._add_int32)
            shift = draw(1, 22)
            ma, mb = draw(0, 2 << shift), draw(0, 2 << shift)
        else:
            ma, mb, shift = draw(0, 2**31 - 1), draw(0, 2**31 - 1), draw(1, 62)
        return _case(op, [t, t], [values(draw, shape, I8), values(draw, shape, I8)], za=draw(-128, 127),
                     zb=draw(-128, 127), ma=ma, mb=mb, shift=shift, zy=draw(-128, 127), lo=lo, hi=draw(lo, 127))
    if op == Opcode.RELU:
        shape = tuple(draw(1, max_dim) for _ in range(draw(1, 4)))
        return _case(op, [TensorType(I8, shape)], [values(draw, shape, I8)], zp=draw(-128, 127))
    if op in (Opcode.IM2COL, Opcode.MAXPOOL, Opcode.AVGPOOL):
        shape = (draw(1, 3), draw(1, max_dim + 2), draw(1, max_dim + 2), draw(1, max_dim))
        t = TensorType(I8, shape)
        if op == Opcode.AVGPOOL:
            req = requant_params(draw, ReqMode.PER_TENSOR)
            return _case(op, [t], [values(draw, shape, I8)], x_zp=draw(-128, 127), requant=req)
        kh, kw = draw(1, shape[1] + 2), draw(1, shape[2] + 2)
        ph = draw(max(0, -(-(kh - shape[1]) // 2)), kh)
        pw = draw(max(0, -(-(kw - shape[2]) // 2)), kw)
        win = {"kh": kh, "kw": kw, "sh": draw(1, 3), "sw": draw(1, 3), "ph": ph, "pw": pw}
        if op == Opcode.IM2COL:
            win["pad"] = draw(-128, 127)
        return _case(op, [t], [values(draw, shape, I8)], **win)
    if op in (Opcode.ARGMAX, Opcode.RESHAPE, Opcode.TRANSPOSE):
        dt = DType(draw(1, 2))
        shape = tuple(draw(1, max_dim) for _ in range(draw(1, 4)))
        t = TensorType(dt, shape)
        arr = values(draw, shape, dt)
        if op == Opcode.ARGMAX:
            return _case(op, [t], [arr])
        if op == Opcode.RESHAPE:
            return _case(op, [t], [arr], out=TensorType(dt, (t.count,)) if draw(0, 1) else TensorType(dt, shape[::-1]))
        perm = list(range(len(shape)))
        for i in range(len(perm) - 1, 0, -1):
            j = draw(0, i)
            perm[i], perm[j] = perm[j], perm[i]
        return _case(op, [t], [arr], perm=tuple(perm))
    if op in (Opcode.CHUNKMAX, Opcode.PAIRARGMAX):
        lead = tuple(draw(1, max_dim) for _ in range(draw(0, 2)))
        k = draw(1, 6 * max_dim)
        pairs = op == Opcode.PAIRARGMAX or draw(0, 1)
        dt = I32 if pairs else DType(draw(1, 2))
        shape = (*lead, k, 2) if pairs else (*lead, k)
        t = TensorType(dt, shape)
        if op == Opcode.PAIRARGMAX:
            return _case(op, [t], [values(draw, shape, dt)])
        return _case(op, [t], [values(draw, shape, dt)], q=draw(1, k), pairs=int(pairs))
    if op == Opcode.CHUNKSUM:
        shape = (draw(1, 3), draw(1, max_dim + 2), draw(1, max_dim + 2), draw(1, max_dim))
        return _case(op, [TensorType(I8, shape)], [values(draw, shape, I8)], x_zp=draw(-128, 127),
                     q=draw(1, shape[1] * shape[2]))
    if op == Opcode.SUMREQUANT:
        shape = tuple(draw(1, max_dim) for _ in range(draw(1, 3))) + (draw(1, 6 * max_dim),)
        return _case(op, [TensorType(I32, shape)], [values(draw, shape, I32)],
                     requant=requant_params(draw, ReqMode.PER_TENSOR))
    if op in (Opcode.MATMUL, Opcode.LUT, Opcode.MUL, Opcode.GATHER):
        return _transformer_case(draw, op, max_dim, max_k)
    if op == Opcode.SOFTMAX:
        return _softmax_case(draw, max_dim)
    if op == Opcode.LAYERNORM:
        return _layernorm_case(draw, max_dim)
    if op == Opcode.ROPE:
        return _rope_case(draw, max_dim)
    if op == Opcode.TOPK:
        return _topk_case(draw, max_dim)
    if op in (Opcode.CONCAT, Opcode.SLICE):
        return _view_case(draw, op, max_dim)
    raise ValueError(op)


def _transformer_case(draw: Draw, op: Opcode, max_dim: int, max_k: int) -> OpCase:
    """matmul (either operand transposed, both zero points, int32 or requantized output), lut (a
    random or constant table), mul, gather (ids in range, and out of range on both sides)."""
    I8, I32 = DType.INT8, DType.INT32
    shape = tuple(draw(1, max_dim) for _ in range(draw(1, 4)))
    if op == Opcode.LUT:
        t = TensorType(I8, shape)
        return _case(op, [t, TensorType(I8, (256,))], [values(draw, shape, I8), values(draw, (256,), I8)])
    if op == Opcode.MUL:
        t = TensorType(I8, shape)
        return _case(op, [t, t], [values(draw, shape, I8), values(draw, shape, I8)], za=draw(-128, 127),
                     zb=draw(-128, 127), requant=requant_params(draw, ReqMode.PER_TENSOR))
    if op == Opcode.GATHER:
        ids_shape = shape[: draw(1, 3)]
        v, dd = draw(1, 4 * max_dim), draw(1, 2 * max_dim)
        rng = np.random.default_rng(draw(0, 2**32 - 1))
        ids = rng.integers(-2, v + 2, size=ids_shape) if draw(0, 1) else rng.integers(0, v, size=ids_shape)
        if draw(0, 3) == 0:  # int32 extremes
            ids.flat[0] = (-(2**31), 2**31 - 1)[draw(0, 1)]
        return _case(op, [TensorType(I32, ids_shape), TensorType(I8, (v, dd))],
                     [ids.astype(np.int32), values(draw, (v, dd), I8)])
    lead = tuple(draw(1, 3) for _ in range(draw(0, 2)))
    m, k, n = draw(1, max_dim + 2), draw(1, max_k), draw(1, max_dim + 2)
    ta, tb = draw(0, 1), draw(0, 1)
    a, b = TensorType(I8, (*lead, k, m) if ta else (*lead, m, k)), TensorType(I8, (*lead, n, k) if tb else (*lead, k, n))
    mode = ReqMode(draw(0, 1))
    return _case(op, [a, b], [values(draw, a.shape, I8), values(draw, b.shape, I8)], ta=ta, tb=tb,
                 za=draw(-128, 127), zb=draw(-128, 127), requant=requant_params(draw, mode) if mode else Requant())


def exp_table(scale: float) -> np.ndarray:
    """softmax's int32 [256] exp table for logits of scale `scale`: round(2^15 * exp(-d * scale))."""
    return np.round(32768.0 * np.exp(-np.arange(256) * scale)).astype(np.int32)


def _softmax_case(draw: Draw, max_dim: int) -> OpCase:
    """softmax rows of 1..8*max_dim logits, edge rows included (all -128, all 127, one huge logit
    over -128s, all equal), a real exp table or an arbitrary int32 one (negative entries, entries
    above 2^15: the op clamps them), causal or not with a position offset."""
    I8, I32 = DType.INT8, DType.INT32
    shape = tuple(draw(1, 3) for _ in range(draw(0, 2))) + (draw(1, max_dim), draw(1, 8 * max_dim))
    x = values(draw, shape, I8)
    edge = draw(0, 5)
    if edge == 1:
        x[...] = (-128, 127, draw(-128, 127))[draw(0, 2)]
    elif edge == 2:  # one huge logit per row at a random column
        x[...] = -128
        x[..., draw(0, shape[-1] - 1)] = 127
    kind = draw(0, 2)
    if kind == 0:
        table = exp_table(draw(1, 400) / 1000)
    elif kind == 1:
        table = values(draw, (256,), I32)
    else:
        table = np.full(256, (0, -1, 1 << 15, 2**31 - 1)[draw(0, 3)], dtype=np.int32)
    causal = draw(0, 1)
    off = (0, draw(0, 3), draw(0, 2**32 - 1))[draw(0, 2)] if causal else 0
    return _case(Opcode.SOFTMAX, [TensorType(I8, shape), TensorType(I32, (256,))], [x, table],
                 causal=causal, off=off)


def _layernorm_case(draw: Draw, max_dim: int) -> OpCase:
    """layernorm / rmsnorm rows of 1..8*max_dim, edge rows (constant: sigma = eps only or 0; one
    outlier), eps 0, small, or the largest eps * D^3 allows; gamma and beta of any value."""
    I8, I32 = DType.INT8, DType.INT32
    dd = draw(1, 8 * max_dim)
    shape = tuple(draw(1, 3) for _ in range(draw(0, 2))) + (draw(1, max_dim), dd)
    x = values(draw, shape, I8)
    if draw(0, 4) == 0:  # one outlier per row
        x[...] = (-128, 127)[draw(0, 1)]
        x[..., draw(0, dd - 1)] = (127, -128)[draw(0, 1)]
    eps = (0, draw(1, 100), (1 << 61) // dd**3)[draw(0, 2)]
    return _case(Opcode.LAYERNORM, [TensorType(I8, shape), TensorType(I8, (dd,)), TensorType(I32, (dd,))],
                 [x, values(draw, (dd,), I8), values(draw, (dd,), I32)], x_zp=draw(-128, 127), rms=draw(0, 1),
                 eps=min(eps, 2**32 - 1), requant=requant_params(draw, ReqMode.PER_TENSOR))


def rope_table(positions: int, dd: int, base: float = 10000.0) -> np.ndarray:
    """rope's int32 [P, D/2, 2] table of round(2^15 cos), round(2^15 sin) of the angle
    p * base^(-2k/D) (Llama / GPT-NeoX frequencies; docs/protocol.md 2.2.3)."""
    ang = np.arange(positions)[:, None] * base ** (-2.0 * np.arange(dd // 2) / dd)[None, :]
    return np.round(32768.0 * np.stack([np.cos(ang), np.sin(ang)], axis=-1)).astype(np.int32)


def _rope_case(draw: Draw, max_dim: int) -> OpCase:
    """rope over [.., T, D] (D even, up to 8*max_dim), a real table or an arbitrary int32 one
    (entries beyond +-2^15: the op clamps them), position offsets 0, small or up to the table's end."""
    I8, I32 = DType.INT8, DType.INT32
    dd = 2 * draw(1, 4 * max_dim)
    shape = tuple(draw(1, 3) for _ in range(draw(0, 2))) + (draw(1, max_dim), dd)
    x = values(draw, shape, I8)
    extra = (0, draw(0, 3), draw(0, 40))[draw(0, 2)]
    p = shape[-2] + extra
    off = draw(0, extra)
    kind = draw(0, 2)
    if kind == 0:
        table = rope_table(p, dd, (10000.0, 500000.0, 10.0)[draw(0, 2)])
    elif kind == 1:
        table = values(draw, (p, dd // 2, 2), I32)
    else:
        table = np.full((p, dd // 2, 2), (-(2**31), 2**31 - 1, 1 << 15, -(1 << 15))[draw(0, 3)], dtype=np.int32)
    return _case(Opcode.ROPE, [TensorType(I8, shape), TensorType(I32, (p, dd // 2, 2))], [x, table],
                 x_zp=draw(-128, 127), off=off, requant=requant_params(draw, ReqMode.PER_TENSOR) if draw(0, 1)
                 else Requant(ReqMode.PER_TENSOR, draw(1 << 14, 1 << 15), 30, draw(-8, 8), -128, 127))


def _topk_case(draw: Draw, max_dim: int) -> OpCase:
    """topk over rows of 1..8*max_dim values (ties: constant rows, few distinct values, all -128 or
    127, one huge value), or over pairs (arbitrary int32 values, clamped by the op); the whole row
    (q = 0) or chunks of q >= k with a short last chunk."""
    I8, I32 = DType.INT8, DType.INT32
    pairs = draw(0, 1)
    q_mode = draw(0, 1)
    lead = tuple(draw(1, 3) for _ in range(draw(0, 1 if q_mode else 2)))
    n = draw(1, 8 * max_dim)
    if pairs:
        shape = (*lead, n, 2)
        x = values(draw, shape, I32)
        if draw(0, 1):  # values in the int8 range, as a chunked topk leaves them
            x[..., 0] = values(draw, (*lead, n), I8)
    else:
        shape = (*lead, n)
        x = values(draw, shape, I8)
        if draw(0, 3) == 0:
            x[...] = (-128, 127)[draw(0, 1)]
            x[..., draw(0, n - 1)] = (127, -128)[draw(0, 1)]
    q = draw(1, n) if q_mode else 0
    k = draw(1, q or n)
    return _case(Opcode.TOPK, [TensorType(I32 if pairs else I8, shape)], [x], k=k, q=q, pairs=pairs)


def _view_case(draw: Draw, op: Opcode, max_dim: int) -> OpCase:
    """concat of two int8 or int32 tensors along any axis (the second often one position long: a
    KV-cache step), or a slice [start, start + len) of any axis (whole, one position, the ends)."""
    dt = DType(draw(1, 2))
    shape = [draw(1, max_dim) for _ in range(draw(1, 4))]
    axis = draw(0, len(shape) - 1)
    x = TensorType(dt, tuple(shape))
    if op == Opcode.CONCAT:
        shape[axis] = (1, draw(1, max_dim))[draw(0, 1)]
        y = TensorType(dt, tuple(shape))
        return _case(op, [x, y], [values(draw, x.shape, dt), values(draw, y.shape, dt)], axis=axis)
    n = shape[axis]
    length = (1, n, draw(1, n))[draw(0, 2)]
    start = draw(0, n - length)
    return _case(op, [x], [values(draw, x.shape, dt)], axis=axis, start=start, len=length)
