"""Typing rules of every op (docs/protocol.md 3.3-3.4): the output type an op must declare for
its inputs and attributes, and the range checks on attributes. One ProgramError per problem.

Pure; used by program validation, the scalar reference and the executor. Anyone may import it.
"""

from __future__ import annotations

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.types import (
    REQ_OPS,
    DType,
    Opcode,
    OpDescriptor,
    ProgramError,
    ReqMode,
    SlotKind,
    TensorType,
    check_mult_shift,
)

MAX_TENSOR_BYTES = 1 << 28
# What ONE output element's one-step may read (docs/protocol.md 3.4, 5.7.5), so that the worst valid
# step of every op fits a transaction (goal: <= 5M gas incl. the game's checks). Twins in
# contracts/src/dispute/int8/LibDescriptor.sol.
# Leaves the step may open: per input range, the leaves a range of that many bytes can touch at the
# worst alignment, plus one leaf's worth for its sibling path (range_leaves).
MAX_STEP_LEAVES = 96
# Input elements the step scans one by one (maxpool's window inside the image, avgpool's H*W,
# argmax's row length).
MAX_STEP_ELEMENTS = 1 << 14
# linear's dot-product length (x row and W row: 2 * range_leaves(K) + bias + qp <= MAX_STEP_LEAVES).
MAX_K = 1 << 15

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
    base = {Opcode.LINEAR: 3, Opcode.ADD: 2, Opcode.MATMUL: 2, Opcode.LUT: 2, Opcode.MUL: 2,
            Opcode.GATHER: 2, Opcode.SOFTMAX: 2, Opcode.LAYERNORM: 3, Opcode.ROPE: 2,
            Opcode.CONCAT: 2}.get(desc_op, 1)
    return base + (1 if req_mode == ReqMode.PER_CHANNEL else 0)


def expected_out(d: OpDescriptor) -> TensorType:
    """The output type the op's rule gives for its inputs; raises on any input/attribute problem."""
    op = d.opcode
    name = op.name.lower()
    mode = d.requant.mode if op in REQ_OPS else None
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
        return TensorType(I8, (x.shape[0], x.shape[3]))
    if op == Opcode.ARGMAX:
        return TensorType(I32, x.shape[:-1] if len(x.shape) > 1 else (1,))
    if op == Opcode.RESHAPE:
        _need(d.out.dtype == x.dtype and d.out.count == x.count,
              f"reshape: {x} -> {d.out} changes the dtype or element count")
        return d.out
    if op in _CHUNKED:
        return _chunked_out(d, x, mode)
    if op in _TRANSFORMER:
        return _transformer_out(d, t, mode)
    if op == Opcode.TRANSPOSE:
        r = len(x.shape)
        full = [d.attr(f"p{i}") for i in range(4)]
        _need(sorted(full[:r]) == list(range(r)) and full[r:] == list(range(r, 4)),
              f"transpose: perm {full} is not a canonical permutation of rank {r}")
        return TensorType(x.dtype, tuple(x.shape[p] for p in full[:r]))
    if op in (Opcode.CONCAT, Opcode.SLICE):
        return _view_out(d, t)
    raise ProgramError(f"unknown op {op!r}")  # pragma: no cover - Opcode is closed


def _view_out(d: OpDescriptor, t: list[TensorType]) -> TensorType:
    """concat: x and y of one dtype and rank, equal dims but on `axis`, out x with x + y there;
    slice: `start + len <= x.dims[axis]`, `len >= 1`, out x with `len` there (docs/protocol.md 2.2.5)."""
    x, axis, name = t[0], d.attr("axis"), d.opcode.name.lower()
    _need(axis < len(x.shape), f"{name}: axis {axis} outside rank {len(x.shape)}")
    dims = list(x.shape)
    if d.opcode == Opcode.CONCAT:
        y = t[1]
        _need(y.dtype == x.dtype and len(y.shape) == len(x.shape)
              and all(a == b for k, (a, b) in enumerate(zip(x.shape, y.shape, strict=True)) if k != axis),
              f"concat: {x} and {y} differ in dtype, rank or a dim other than axis {axis}")
        dims[axis] += y.shape[axis]
    else:
        start, length = d.attr("start"), d.attr("len")
        _need(length >= 1 and start + length <= x.shape[axis],
              f"slice: [{start}, {start + length}) is not a non-empty range of axis {axis} of {x}")
        dims[axis] = length
    return TensorType(x.dtype, tuple(dims))


_CHUNKED = (Opcode.CHUNKMAX, Opcode.PAIRARGMAX, Opcode.CHUNKSUM, Opcode.SUMREQUANT)


def chunk_geometry(d: OpDescriptor) -> tuple[int, int, int]:
    """(K, q, G) of a chunkmax or chunksum: the reduced length K (chunkmax: the row, or the pairs of
    a row; chunksum: the H*W positions), the chunk length q and the chunk count G = ceil(K / q)."""
    x = d.inputs[0].type
    if d.opcode == Opcode.CHUNKSUM:
        k = x.shape[1] * x.shape[2]
    else:
        k = x.shape[-2] if d.attr("pairs") else x.shape[-1]
    q = d.attr("q")
    return k, q, -(-k // q) if q else 0


def _chunked_out(d: OpDescriptor, x: TensorType, mode: ReqMode | None) -> TensorType:
    """Output types of the chunked reductions (docs/protocol.md 2.2, 5.7.7)."""
    op = d.opcode
    if op == Opcode.CHUNKMAX:
        pairs = d.attr("pairs")
        _need(pairs in (0, 1), f"chunkmax: pairs must be 0 or 1, got {pairs}")
        if pairs:
            _need(x.dtype == I32 and 2 <= len(x.shape) <= 4 and x.shape[-1] == 2,
                  f"chunkmax: pairs input must be int32 [.., K, 2] of rank 2..4, got {x}")
            lead = x.shape[:-2]
        else:
            _need(len(x.shape) <= 3, f"chunkmax: values input must be of rank 1..3, got {x}")
            lead = x.shape[:-1]
        k, q, g = chunk_geometry(d)
        _need(1 <= q <= k, f"chunkmax: chunk length q = {q} outside [1, {k}]")
        return TensorType(I32, (*lead, g, 2))
    if op == Opcode.PAIRARGMAX:
        _need(x.dtype == I32 and len(x.shape) >= 2 and x.shape[-1] == 2,
              f"pairargmax: input must be int32 [.., G, 2], got {x}")
        return TensorType(I32, x.shape[:-2] if len(x.shape) > 2 else (1,))
    if op == Opcode.CHUNKSUM:
        _need(x.dtype == I8 and len(x.shape) == 4, f"chunksum: input must be int8 [N,H,W,C], got {x}")
        k, q, g = chunk_geometry(d)
        _need(1 <= q <= k, f"chunksum: chunk length q = {q} outside [1, H*W = {k}]")
        return TensorType(I32, (x.shape[0], x.shape[3], g))
    _need(x.dtype == I32 and len(x.shape) >= 2, f"sumrequant: input must be int32 of rank 2..4, got {x}")
    _need(mode == ReqMode.PER_TENSOR, "sumrequant: requant must be per_tensor")
    return TensorType(I8, x.shape[:-1])


_TRANSFORMER = (Opcode.MATMUL, Opcode.LUT, Opcode.MUL, Opcode.GATHER, Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.ROPE,
                Opcode.TOPK)
#: layernorm: eps * D^3 <= 2^61 keeps V = Q + eps * D^3 below 2^62 (docs/protocol.md 2.2.2).
MAX_LN_EPS_TERM = 1 << 61
#: Rows of a gather table (an LLM vocabulary); the 2^28-byte tensor limit bounds V * D as well.
MAX_GATHER_ROWS = 1 << 17


def matmul_geometry(d: OpDescriptor) -> tuple[int, int, int, int, int, int]:
    """(batch, M, K, N, ta, tb) of a matmul: A is [.., M, K] ([.., K, M] when ta), B [.., K, N]
    ([.., N, K] when tb); batch = the product of the leading dims."""
    a, b = d.inputs[0].type.shape, d.inputs[1].type.shape
    ta, tb = d.attr("ta"), d.attr("tb")
    m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
    n = b[-2] if tb else b[-1]
    batch = 1
    for v in a[:-2]:
        batch *= v
    return batch, m, k, n, ta, tb


def _transformer_out(d: OpDescriptor, t: list[TensorType], mode: ReqMode | None) -> TensorType:
    """Output types of matmul, lut, mul, gather (docs/protocol.md 2.2, 3.3)."""
    op, x = d.opcode, t[0]
    if op == Opcode.MATMUL:
        _need(mode in (ReqMode.NONE, ReqMode.PER_TENSOR), "matmul: requant must be none or per_tensor")
        _need(d.attr("ta") in (0, 1) and d.attr("tb") in (0, 1), "matmul: ta and tb must be 0 or 1")
        b = t[1]
        _need(x.dtype == I8 and b.dtype == I8 and 2 <= len(x.shape) <= 4 and len(b.shape) == len(x.shape)
              and x.shape[:-2] == b.shape[:-2], f"matmul: A and B must be int8 of one rank 2..4 with the same "
              f"leading dims, got {x} and {b}")
        _, m, k, n, _, tb = matmul_geometry(d)
        _need((b.shape[-1] if tb else b.shape[-2]) == k, f"matmul: A has K = {k} but B is {list(b.shape)}")
        _need(k <= MAX_K, f"matmul: K = {k} above the limit {MAX_K}")
        return TensorType(I32 if mode == ReqMode.NONE else I8, (*x.shape[:-2], m, n))
    if op == Opcode.MUL:
        _need(mode == ReqMode.PER_TENSOR, "mul: requant must be per_tensor")
        _need(x.dtype == I8 and t[1] == x, f"mul: inputs must be int8 of one shape, got {t[0]} and {t[1]}")
        return x
    if op == Opcode.TOPK:
        return _topk_out(d, x)
    _need(d.inputs[1].kind == SlotKind.WEIGHT, f"{op.name.lower()}: the table must be a weight")
    if op == Opcode.LAYERNORM:
        _need(mode == ReqMode.PER_TENSOR, "layernorm: requant must be per_tensor")
        _need(d.attr("rms") in (0, 1), "layernorm: rms must be 0 or 1")
        _need(d.inputs[2].kind == SlotKind.WEIGHT, "layernorm: beta must be a weight")
        dd = x.shape[-1]
        _need(x.dtype == I8 and 2 <= len(x.shape) <= 4 and t[1] == TensorType(I8, (dd,))
              and t[2] == TensorType(I32, (dd,)), f"layernorm: x must be int8 [.., D] of rank 2..4, gamma int8 [D] "
              f"and beta int32 [D], got {t[0]}, {t[1]} and {t[2]}")
        _need(d.attr("eps") * dd**3 <= MAX_LN_EPS_TERM, f"layernorm: eps * D^3 above 2^61 (D = {dd})")
        return x
    if op == Opcode.ROPE:
        return _rope_out(d, t, mode)
    if op == Opcode.SOFTMAX:
        _need(d.attr("causal") in (0, 1), "softmax: causal must be 0 or 1")
        _need(x.dtype == I8 and 2 <= len(x.shape) <= 4 and t[1] == TensorType(I32, (256,)),
              f"softmax: x must be int8 of rank 2..4 and the exp table int32 [256], got {t[0]} and {t[1]}")
        return x
    if op == Opcode.LUT:
        _need(x.dtype == I8 and t[1] == TensorType(I8, (256,)), f"lut: x must be int8 and the table int8 [256], "
              f"got {t[0]} and {t[1]}")
        return x
    tab = t[1]
    _need(x.dtype == I32 and len(x.shape) <= 3, f"gather: ids must be int32 of rank 1..3, got {x}")
    _need(tab.dtype == I8 and len(tab.shape) == 2 and tab.shape[0] <= MAX_GATHER_ROWS,
          f"gather: the table must be int8 [V, D] with V <= {MAX_GATHER_ROWS}, got {tab}")
    return TensorType(I8, (*x.shape, tab.shape[1]))


def _rope_out(d: OpDescriptor, t: list[TensorType], mode: ReqMode | None) -> TensorType:
    """rope: x int8 [.., T, D] (rank 2..4, D even), the (cos, sin) table int32 [P, D/2, 2] a weight,
    positions t + off < P for every row (docs/protocol.md 2.2.3)."""
    x, cs = t
    _need(mode == ReqMode.PER_TENSOR, "rope: requant must be per_tensor")
    _need(x.dtype == I8 and 2 <= len(x.shape) <= 4 and x.shape[-1] % 2 == 0,
          f"rope: x must be int8 [.., T, D] of rank 2..4 with D even, got {x}")
    _need(cs.dtype == I32 and len(cs.shape) == 3 and cs.shape[1:] == (x.shape[-1] // 2, 2),
          f"rope: the table must be int32 [P, D/2, 2] of (cos, sin) pairs, got {cs} for D = {x.shape[-1]}")
    _need(x.shape[-2] + d.attr("off") <= cs.shape[0], f"rope: positions up to T + off = "
          f"{x.shape[-2] + d.attr('off')} above the table's P = {cs.shape[0]} rows")
    return x


def _topk_out(d: OpDescriptor, x: TensorType) -> TensorType:
    """topk (docs/protocol.md 2.2.4): values x int8 [.., L] or pairs x int32 [.., N, 2]; q = 0: the
    k indices of the row, int32 [.., k]; q >= 1: per chunk of q entries its k best (value, index)
    pairs, int32 [.., G, k, 2], with k <= q so that the first chunk alone holds k candidates."""
    pairs, k, q = d.attr("pairs"), d.attr("k"), d.attr("q")
    _need(pairs in (0, 1), "topk: pairs must be 0 or 1")
    if pairs:
        _need(x.dtype == I32 and len(x.shape) >= 2 and x.shape[-1] == 2,
              f"topk: pairs input must be int32 [.., N, 2], got {x}")
        lead = x.shape[:-2]
    else:
        _need(x.dtype == I8, f"topk: values input must be int8 [.., L], got {x}")
        lead = x.shape[:-1]
    n, _, g = chunk_geometry(d)
    if q == 0:
        _need(1 <= k <= n, f"topk: k = {k} outside [1, {n}]")
        return TensorType(I32, (*lead, k))
    _need(1 <= k <= q <= n, f"topk: chunk length q = {q} and k = {k} outside 1 <= k <= q <= {n}")
    _need(len(lead) <= 2, f"topk: chunked output [.., G, k, 2] above rank 4 for {x}")
    return TensorType(I32, (*lead, g, k, 2))


def _qp_check(d: OpDescriptor, channels: int) -> None:
    if d.requant.mode == ReqMode.PER_CHANNEL:
        qp = d.inputs[-1].type
        _need(qp == TensorType(I32, (channels, 2)),
              f"{d.opcode.name.lower()}: per-channel parameters must be int32 [{channels}, 2], got {qp}")


def range_leaves(nbytes: int) -> int:
    """What one input range of `nbytes` bytes counts against MAX_STEP_LEAVES: the leaves it can
    touch at the worst alignment, plus one for its sibling path (at most 2 x 18 siblings of 32 bytes)."""
    return (nbytes + 2 * LEAF_BYTES - 2) // LEAF_BYTES + 1


def step_reads(d: OpDescriptor) -> tuple[int, int]:
    """(leaves, scanned elements) of the worst output element's one-step of a typed descriptor:
    what check_descriptor bounds by MAX_STEP_LEAVES and MAX_STEP_ELEMENTS. The ranges are those of
    reference.element_ranges; the window of maxpool is bounded by the image (rows x columns inside)."""
    op, x = d.opcode, d.inputs[0].type
    per_channel = d.requant.mode == ReqMode.PER_CHANNEL if op in (Opcode.LINEAR, Opcode.REQUANT) else False
    qp = range_leaves(8) if per_channel else 0
    if op == Opcode.LINEAR:  # x row, W row, bias element (+ qp row); the dot product is MAX_K's
        return 2 * range_leaves(x.shape[-1]) + range_leaves(4) + qp, 0
    if op == Opcode.REQUANT:
        return range_leaves(4) + qp, 0
    if op == Opcode.ADD:
        return 2 * range_leaves(1), 0
    if op == Opcode.MAXPOOL:  # one range per window row inside the image
        _, h, w, c = x.shape
        rows, cols = min(d.attr("kh"), h), min(d.attr("kw"), w)
        return rows * range_leaves((cols - 1) * c + 1), rows * cols
    if op == Opcode.AVGPOOL:  # the whole [H, W, C] block of the batch row
        _, h, w, c = x.shape
        return range_leaves(h * w * c), h * w
    if op == Opcode.ARGMAX:
        k = x.shape[-1]
        return range_leaves(k * x.dtype.width), k
    if op == Opcode.CHUNKMAX:  # one chunk: q values, or q pairs (two int32 elements each)
        q = d.attr("q")
        if d.attr("pairs"):
            return range_leaves(8 * q), 2 * q
        return range_leaves(q * x.dtype.width), q
    if op == Opcode.PAIRARGMAX:  # the row's G pairs
        g = x.shape[-2]
        return range_leaves(8 * g), 2 * g
    if op == Opcode.CHUNKSUM:  # q positions of one channel, strided by C
        q, c = d.attr("q"), x.shape[3]
        return range_leaves((q - 1) * c + 1), q
    if op == Opcode.SUMREQUANT:  # the row of G partial sums
        g = x.shape[-1]
        return range_leaves(4 * g), g
    if op == Opcode.MATMUL:  # row m of A and column n of B, each contiguous or strided; K is MAX_K's
        _, m, k, n, ta, tb = matmul_geometry(d)
        return range_leaves((k - 1) * m + 1 if ta else k) + range_leaves(k if tb else (k - 1) * n + 1), 0
    if op == Opcode.LUT:  # the element and the whole 256-byte table
        return range_leaves(1) + range_leaves(256), 0
    if op == Opcode.MUL:
        return 2 * range_leaves(1), 0
    if op == Opcode.GATHER:  # the id and one byte of its table row
        return range_leaves(4) + range_leaves(1), 0
    if op == Opcode.LAYERNORM:  # the row (one scan: sum and sum of squares), gamma[k], beta[k]
        return range_leaves(x.shape[-1]) + range_leaves(1) + range_leaves(4), x.shape[-1]
    if op == Opcode.ROPE:  # x[r, k .. k + D/2] (one range, both ends used) and the (cos, sin) pair
        return range_leaves(x.shape[-1] // 2 + 1) + range_leaves(8), 0
    if op == Opcode.TOPK:  # the row or the chunk: a histogram scan, then a second scan (word-wise for
        n, q, _ = chunk_geometry(d)  # values; per pair, so a pair counts 2 int32 elements x 2 scans)
        size = q or n
        return (range_leaves(8 * size), 4 * size) if d.attr("pairs") else (range_leaves(size), size)
    if op == Opcode.SOFTMAX:  # the element's whole row (scanned once) and the 1 KiB exp table
        return range_leaves(x.shape[-1]) + range_leaves(1024), x.shape[-1]
    return range_leaves(x.dtype.width), 0  # relu, im2col, reshape, transpose, concat, slice: one element


def check_descriptor(d: OpDescriptor) -> None:
    """All rules of one descriptor taken alone (slot ordering is the program's business)."""
    want = expected_out(d)
    name = d.opcode.name.lower()
    if d.out != want:
        raise ProgramError(f"{name}: output declared {d.out}, the rule gives {want}")
    for s in (*d.inputs, d.out):
        ty = s.type if hasattr(s, "type") else s
        if ty.nbytes > MAX_TENSOR_BYTES:
            raise ProgramError(f"{name}: tensor of {ty.nbytes} bytes above 2^28")
    leaves, scanned = step_reads(d)
    _need(scanned <= MAX_STEP_ELEMENTS, f"{name}: one element's one-step scans {scanned} input elements, "
          f"above the limit MAX_STEP_ELEMENTS = {MAX_STEP_ELEMENTS}")
    _need(leaves <= MAX_STEP_LEAVES, f"{name}: one element's one-step reads {leaves} leaves, "
          f"above the limit MAX_STEP_LEAVES = {MAX_STEP_LEAVES}")


def check_qp_rows(rows: list[tuple[int, int]]) -> None:
    """Per-channel (mult, shift) rows of a weight tensor, checked when the weights are loaded."""
    for mult, shift in rows:
        check_mult_shift(mult, shift)
