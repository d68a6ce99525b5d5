"""Scalar reference of every op (docs/protocol.md 2.2): which contiguous input byte ranges one
output element needs, and the element computed from exactly those bytes. This is what the Solidity
one-step verifier mirrors and what the dispute prover uses; `run_op` (whole op, slow) is built on
the same two functions so the tests compare the fast executor against the verifier's arithmetic.

Pure Python; anyone may import it. Element indices are flat row-major indices of the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gpumesh.client.core.ops.intmath import add_rescaled, from_le, requant, to_le, wrap32
from gpumesh.client.core.ops.rules import check_descriptor, chunk_geometry, matmul_geometry
from gpumesh.client.core.ops.types import Opcode, OpDescriptor, ProgramError, ReqMode


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of the canonical encoding of input number `input` of the descriptor."""

    input: int
    start: int
    end: int


def _unravel(i: int, shape: tuple[int, ...]) -> list[int]:
    idx = []
    for d in reversed(shape):
        idx.append(i % d)
        i //= d
    return idx[::-1]


def _ravel(idx: list[int], shape: tuple[int, ...]) -> int:
    i = 0
    for v, d in zip(idx, shape, strict=True):
        i = i * d + v
    return i


def _window(d: OpDescriptor, i: int):
    """(n, oh, ow, last) of output element i and the input geometry of im2col / maxpool."""
    n, oh, ow, last = _unravel(i, d.out.shape)
    _, h, w, c = d.inputs[0].type.shape
    return n, oh, ow, last, h, w, c


Reader = Callable[[int, int, int], bytes]


def element_ranges(d: OpDescriptor, i: int, read: Reader | None = None) -> list[ByteRange]:
    """The input byte ranges output element `i` depends on, in the order `compute_element` reads them.
    Only gather's depend on input data (the table row of the element's id): `read(input, start, end)`
    gives those bytes (the ids range, which comes first); without it gather raises ProgramError."""
    if not 0 <= i < d.out.count:
        raise ProgramError(f"element {i} outside an output of {d.out.count} elements")
    op, x = d.opcode, d.inputs[0].type
    wx = x.dtype.width
    if op == Opcode.GATHER:
        ids = gather_id_range(d, i)
        if read is None:
            raise ProgramError("gather: the table range depends on the id; element_ranges needs a reader")
        return [ids, *gather_row(d, i, read(0, ids.start, ids.end))]
    if op in (Opcode.MATMUL, Opcode.LUT, Opcode.MUL, Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.ROPE):
        return _transformer_ranges(d, i)
    if op == Opcode.LINEAR:
        k, nn = x.shape[-1], d.out.shape[-1]
        m, n = divmod(i, nn)
        r = [ByteRange(0, m * k, (m + 1) * k), ByteRange(1, n * k, (n + 1) * k), ByteRange(2, 4 * n, 4 * n + 4)]
        if d.requant.mode == ReqMode.PER_CHANNEL:
            r.append(ByteRange(3, 8 * n, 8 * n + 8))
        return r
    if op == Opcode.REQUANT:
        r = [ByteRange(0, 4 * i, 4 * i + 4)]
        if d.requant.mode == ReqMode.PER_CHANNEL:
            c = i % x.shape[-1]
            r.append(ByteRange(1, 8 * c, 8 * c + 8))
        return r
    if op == Opcode.ADD:
        return [ByteRange(0, i, i + 1), ByteRange(1, i, i + 1)]
    if op in (Opcode.RELU, Opcode.RESHAPE):
        return [ByteRange(0, i * wx, (i + 1) * wx)]
    if op == Opcode.IM2COL:
        n, oh, ow, col, h, w, c = _window(d, i)
        kk, ci = divmod(col, c)
        kh, kw = divmod(kk, d.attr("kw"))
        ih, iw = oh * d.attr("sh") - d.attr("ph") + kh, ow * d.attr("sw") - d.attr("pw") + kw
        if 0 <= ih < h and 0 <= iw < w:
            j = ((n * h + ih) * w + iw) * c + ci
            return [ByteRange(0, j, j + 1)]
        return []
    if op == Opcode.MAXPOOL:
        n, oh, ow, ci, h, w, c = _window(d, i)
        iw0 = ow * d.attr("sw") - d.attr("pw")
        lo, hi = max(iw0, 0), min(iw0 + d.attr("kw"), w) - 1
        r = []
        for kh in range(d.attr("kh")):
            ih = oh * d.attr("sh") - d.attr("ph") + kh
            if 0 <= ih < h and lo <= hi:
                base = (n * h + ih) * w
                r.append(ByteRange(0, (base + lo) * c + ci, (base + hi) * c + ci + 1))
        return r
    if op == Opcode.AVGPOOL:
        _, h, w, c = x.shape
        n = i // c
        return [ByteRange(0, n * h * w * c, (n + 1) * h * w * c)]
    if op == Opcode.ARGMAX:
        k = x.shape[-1]
        return [ByteRange(0, i * k * wx, (i + 1) * k * wx)]
    if op == Opcode.TOPK:  # the row (q = 0) or chunk g of the row, values or pairs
        n, q, g_count = chunk_geometry(d)
        size = 8 if d.attr("pairs") else 1
        if q == 0:
            row = i // d.attr("k")
            return [ByteRange(0, row * n * size, (row + 1) * n * size)]
        row, g = divmod(i // (2 * d.attr("k")), g_count)
        s, e = row * n + g * q, row * n + min((g + 1) * q, n)
        return [ByteRange(0, s * size, e * size)]
    if op == Opcode.CHUNKMAX:  # element (row, g, j): chunk g of the row, values or pairs
        k, q, g_count = chunk_geometry(d)
        row, g = divmod(i // 2, g_count)
        size = 8 if d.attr("pairs") else wx
        s, e = row * k + g * q, row * k + min((g + 1) * q, k)
        return [ByteRange(0, s * size, e * size)]
    if op == Opcode.PAIRARGMAX:  # the row's G pairs
        row = 8 * x.shape[-2]
        return [ByteRange(0, i * row, (i + 1) * row)]
    if op == Opcode.CHUNKSUM:  # element (n, c, g): positions [g*q, min((g+1)*q, H*W)) of channel c
        p, q, g_count = chunk_geometry(d)
        c = x.shape[3]
        n, rest = divmod(i, c * g_count)
        ci, g = divmod(rest, g_count)
        s, e = n * p + g * q, n * p + min((g + 1) * q, p)
        return [ByteRange(0, s * c + ci, (e - 1) * c + ci + 1)]
    if op == Opcode.SUMREQUANT:  # the row of G int32 partial sums
        row = 4 * x.shape[-1]
        return [ByteRange(0, i * row, (i + 1) * row)]
    if op == Opcode.TRANSPOSE:
        o = _unravel(i, d.out.shape)
        p = [0] * len(o)
        for dim, src in enumerate(d.perm):
            p[src] = o[dim]
        j = _ravel(p, x.shape)
        return [ByteRange(0, j * wx, (j + 1) * wx)]
    if op in (Opcode.CONCAT, Opcode.SLICE):
        k, j = view_source(d, i)
        return [ByteRange(k, j * wx, (j + 1) * wx)]
    raise ProgramError(f"unknown op {op!r}")  # pragma: no cover


def view_source(d: OpDescriptor, i: int) -> tuple[int, int]:
    """(input, flat input index) that concat or slice output element i copies (docs/protocol.md
    2.2.5). With `inner` the product of the dims after `axis`, `a = (i / inner) % out[axis]` is the
    element's position on the axis and `u = i / (inner * out[axis])` its block before the axis: the
    source is position `a' = a - o` of block u of an input whose axis has S_k positions,
    `(u * S_k + a') * inner + i % inner`, with (k, o) = (0, -start) for slice, (0, 0) for concat when
    `a < x[axis]`, else (1, x[axis])."""
    axis, out = d.attr("axis"), d.out.shape
    inner = math.prod(out[axis + 1 :])
    u, a = divmod(i // inner, out[axis])
    k, o = 0, -d.attr("start") if d.opcode == Opcode.SLICE else 0
    if d.opcode == Opcode.CONCAT and a >= d.inputs[0].type.shape[axis]:
        k, o = 1, d.inputs[0].type.shape[axis]
    return k, (u * d.inputs[k].type.shape[axis] + a - o) * inner + i % inner


def _transformer_ranges(d: OpDescriptor, i: int) -> list[ByteRange]:
    """matmul: row m of A and column n of B (contiguous, or strided by M / N when that operand is
    stored the other way round); lut: the element and the whole table; mul: the element of each;
    layernorm, softmax: the row and the parameters; rope: the pair's span and its (cos, sin) pair."""
    if d.opcode == Opcode.MATMUL:
        _, m, k, n, ta, tb = matmul_geometry(d)
        bi, rest = divmod(i, m * n)
        mi, ni = divmod(rest, n)
        a0, b0 = bi * m * k, bi * k * n
        ra = ByteRange(0, a0 + mi, a0 + (k - 1) * m + mi + 1) if ta else ByteRange(0, a0 + mi * k, a0 + (mi + 1) * k)
        rb = ByteRange(1, b0 + ni * k, b0 + (ni + 1) * k) if tb else ByteRange(1, b0 + ni, b0 + (k - 1) * n + ni + 1)
        return [ra, rb]
    if d.opcode == Opcode.LUT:
        return [ByteRange(0, i, i + 1), ByteRange(1, 0, 256)]
    if d.opcode == Opcode.LAYERNORM:  # the element's row, gamma[k], beta[k]
        dd = d.out.shape[-1]
        k = i % dd
        return [ByteRange(0, i - k, i - k + dd), ByteRange(1, k, k + 1), ByteRange(2, 4 * k, 4 * k + 4)]
    if d.opcode == Opcode.ROPE:  # x[r, k] .. x[r, k + D/2] and the (cos, sin) pair of (t + off, k)
        dd = d.out.shape[-1]
        h, r0, p = dd // 2, i - i % dd, (i // dd) % d.out.shape[-2] + d.attr("off")
        k = i % h
        return [ByteRange(0, r0 + k, r0 + k + h + 1), ByteRange(1, 8 * (p * h + k), 8 * (p * h + k) + 8)]
    if d.opcode == Opcode.SOFTMAX:  # the element's row and the whole int32 [256] exp table
        length = d.out.shape[-1]
        r0 = i - i % length
        return [ByteRange(0, r0, r0 + length), ByteRange(1, 0, 1024)]
    return [ByteRange(0, i, i + 1), ByteRange(1, i, i + 1)]


#: softmax: exp(0) in the table's fixed point (docs/protocol.md 2.2.1).
SOFTMAX_ONE = 1 << 15


def softmax_unmasked(length: int, rows: int, r: int, causal: int, off: int) -> int:
    """How many leading columns of flat row r are unmasked: all L, or min(L, t + off + 1) with
    t = r % R the query position when causal (column 0 is never masked)."""
    return min(length, r % rows + off + 1) if causal else length


def softmax_element(row: list[int], table: list[int], j: int, n: int) -> int:
    """Element j of a softmax row whose first n columns are unmasked (docs/protocol.md 2.2.1):
    e(0) = 2^15, e(d) = clamp(T[d], 0, 2^15); S = sum of e(M - x) over the unmasked columns
    (2^15 <= S <= L * 2^15); y = min(floor((512 e_j + S) / (2 S)) - 128, 127); masked: -128."""
    if j >= n:
        return -128
    top = max(row[:n])

    def e(dist: int) -> int:
        return SOFTMAX_ONE if dist == 0 else min(max(table[dist], 0), SOFTMAX_ONE)

    s = sum(e(top - v) for v in row[:n])
    return min((512 * e(top - row[j]) + s) // (2 * s) - 128, 127)


def layernorm_z(row: list[int], k: int, x_zp: int, rms: int, eps: int) -> int:
    """The normalized value of column k in 12 fractional bits (docs/protocol.md 2.2.2): v = x - x_zp,
    c = D v - sum v (RMSNorm: D v), V = sum c^2 + eps D^3, sigma = isqrt(V), rD = isqrt(D 2^24),
    z = floor((2 c_k rD + sigma) / (2 sigma)) (c_k rD / sigma rounded half up); 0 when sigma = 0."""
    dd = len(row)
    v = [a - x_zp for a in row]
    t = 0 if rms else sum(v)
    c = [dd * a - t for a in v]
    sigma = math.isqrt(sum(a * a for a in c) + eps * dd**3)
    if sigma == 0:
        return 0
    return (2 * c[k] * math.isqrt(dd << 24) + sigma) // (2 * sigma)


#: rope: the fixed point of the (cos, sin) table, whose entries are clamped to [-2^15, 2^15].
ROPE_ONE = 1 << 15


def rope_element(a: int, b: int, cos: int, sin: int, second: bool) -> int:
    """The rotated accumulator of pair (a, b) = (x[k] - x_zp, x[k + D/2] - x_zp) (docs/protocol.md
    2.2.3): first half a c - b s, second half b c + a s, with c, s the table entries clamped to
    [-2^15, 2^15] (|acc| <= 2 * 255 * 2^15 < 2^24)."""
    c, s = (min(max(v, -ROPE_ONE), ROPE_ONE) for v in (cos, sin))
    return b * c + a * s if second else a * c - b * s


#: topk: the (value, index) pair of a chunk position beyond the chunk's end (its last chunk may be
#: shorter than k): ranked after every real entry, so never among a later level's k best.
TOPK_PAD = (-128, -1)


def topk_entry(vals: list[int], m: int) -> int:
    """Position of the entry of rank m (0-based) when the int8 values `vals` are ordered by value
    descending, then position ascending (docs/protocol.md 2.2.4); the one-step finds it with a
    256-bucket histogram (the value of rank m) and a second scan (its occurrence)."""
    return sorted(range(len(vals)), key=lambda p: (-vals[p], p))[m]


def gather_id_range(d: OpDescriptor, i: int) -> ByteRange:
    """The int32 id of gather's output element i (row r = i / D of the output, r-th id)."""
    r = i // d.inputs[1].type.shape[1]
    return ByteRange(0, 4 * r, 4 * r + 4)


def gather_row(d: OpDescriptor, i: int, id_bytes: bytes) -> list[ByteRange]:
    """The table byte gather's element i reads for the id in `id_bytes`: none when the id is outside
    [0, V) (the element is then 0, docs/protocol.md 2.2)."""
    v, dd = d.inputs[1].type.shape
    tid = from_le(id_bytes, 4)[0]
    if not 0 <= tid < v:
        return []
    j = tid * dd + i % dd
    return [ByteRange(1, j, j + 1)]


def _req(d: OpDescriptor, acc: int, chunk: bytes | None) -> int:
    q = d.requant
    if q.mode == ReqMode.PER_CHANNEL:
        mult, shift = from_le(chunk, 4)
        if not (0 <= mult < 1 << 31 and 1 <= shift <= 62):
            raise ProgramError(f"per-channel parameters ({mult}, {shift}) out of range")
    else:
        mult, shift = q.mult, q.shift
    return requant(acc, mult, shift, q.zp, q.lo, q.hi)


def compute_element(d: OpDescriptor, i: int, chunks: list[bytes]) -> int:
    """Output element `i` from the bytes of `element_ranges(d, i)` (same order, same lengths)."""
    op, x = d.opcode, d.inputs[0].type
    if op == Opcode.LINEAR:
        xs, ws = from_le(chunks[0], 1), from_le(chunks[1], 1)
        zp = d.attr("x_zp")
        acc = wrap32(sum((a - zp) * b for a, b in zip(xs, ws, strict=True)) + from_le(chunks[2], 4)[0])
        if d.requant.mode == ReqMode.NONE:
            return acc
        return _req(d, acc, chunks[3] if len(chunks) > 3 else None)
    if op == Opcode.REQUANT:
        return _req(d, from_le(chunks[0], 4)[0], chunks[1] if len(chunks) > 1 else None)
    if op == Opcode.ADD:
        a = dict(d.attrs)
        return add_rescaled(from_le(chunks[0], 1)[0], from_le(chunks[1], 1)[0], a["za"], a["zb"], a["ma"],
                            a["mb"], a["shift"], a["zy"], a["lo"], a["hi"])
    if op == Opcode.RELU:
        return max(from_le(chunks[0], 1)[0], d.attr("zp"))
    if op in (Opcode.RESHAPE, Opcode.TRANSPOSE, Opcode.CONCAT, Opcode.SLICE):
        return from_le(chunks[0], x.dtype.width)[0]
    if op == Opcode.IM2COL:
        return from_le(chunks[0], 1)[0] if chunks else d.attr("pad")
    if op == Opcode.MAXPOOL:
        c = x.shape[3]
        vals = [v for ch in chunks for v in from_le(ch, 1)[::c]]
        # Out-of-range window positions read -128 (docs/protocol.md section 2); they never exceed a real value.
        return max(vals, default=-128)
    if op == Opcode.AVGPOOL:
        c = x.shape[3]
        ci = i % c
        zp = d.attr("x_zp")
        acc = sum(v - zp for v in from_le(chunks[0], 1)[ci::c])
        return _req(d, acc, None)
    if op == Opcode.ARGMAX:
        return _first_max(from_le(chunks[0], x.dtype.width))
    if op == Opcode.TOPK:
        return _topk_element(d, i, chunks[0])
    if op == Opcode.CHUNKMAX:
        if d.attr("pairs"):
            best, index = _first_max_pair(from_le(chunks[0], 4))
        else:
            vals = from_le(chunks[0], x.dtype.width)
            _, q, g_count = chunk_geometry(d)
            k = _first_max(vals)
            best, index = vals[k], q * ((i // 2) % g_count) + k
        return index if i % 2 else best
    if op == Opcode.PAIRARGMAX:
        return _first_max_pair(from_le(chunks[0], 4))[1]
    if op == Opcode.CHUNKSUM:
        c, zp = x.shape[3], d.attr("x_zp")
        return sum(v - zp for v in from_le(chunks[0], 1)[::c])
    if op == Opcode.SUMREQUANT:
        return _req(d, wrap32(sum(from_le(chunks[0], 4))), None)
    if op == Opcode.MATMUL:
        _, m, _, n, ta, tb = matmul_geometry(d)
        av, bv = from_le(chunks[0], 1)[:: m if ta else 1], from_le(chunks[1], 1)[:: 1 if tb else n]
        za, zb = d.attr("za"), d.attr("zb")
        # |acc| <= 255 * 255 * K <= 65025 * 2^15 < 2^31: exact in int32, no wrap (2.2)
        acc = sum((p - za) * (q - zb) for p, q in zip(av, bv, strict=True))
        return acc if d.requant.mode == ReqMode.NONE else _req(d, acc, None)
    if op == Opcode.LUT:
        return from_le(chunks[1], 1)[from_le(chunks[0], 1)[0] + 128]
    if op == Opcode.MUL:
        return _req(d, (from_le(chunks[0], 1)[0] - d.attr("za")) * (from_le(chunks[1], 1)[0] - d.attr("zb")), None)
    if op == Opcode.LAYERNORM:
        z = layernorm_z(from_le(chunks[0], 1), i % d.out.shape[-1], d.attr("x_zp"), d.attr("rms"), d.attr("eps"))
        return _req(d, wrap32(z * from_le(chunks[1], 1)[0] + from_le(chunks[2], 4)[0]), None)
    if op == Opcode.ROPE:
        xs, zp, h = from_le(chunks[0], 1), d.attr("x_zp"), d.out.shape[-1] // 2
        cos, sin = from_le(chunks[1], 4)
        return _req(d, rope_element(xs[0] - zp, xs[h] - zp, cos, sin, i % (2 * h) >= h), None)
    if op == Opcode.SOFTMAX:
        length = d.out.shape[-1]
        n = softmax_unmasked(length, d.out.shape[-2], i // length, d.attr("causal"), d.attr("off"))
        return softmax_element(from_le(chunks[0], 1), from_le(chunks[1], 4), i % length, n)
    if op == Opcode.GATHER:  # an id outside [0, V) opens no table byte and gives 0
        return from_le(chunks[1], 1)[0] if len(chunks) > 1 else 0
    raise ProgramError(f"unknown op {op!r}")  # pragma: no cover


def _topk_element(d: OpDescriptor, i: int, chunk: bytes) -> int:
    """topk's element i from its row or chunk: values are the int8 bytes (index: the position, plus
    the chunk's start g*q), or each pair's value clamped to [-128, 127] (index: the pair's own)."""
    k, q, pairs = d.attr("k"), d.attr("q"), d.attr("pairs")
    flat = from_le(chunk, 4 if pairs else 1)
    vals = [min(max(v, -128), 127) for v in flat[0::2]] if pairs else flat
    m = i % k if q == 0 else (i // 2) % k
    if m >= len(vals):  # a short last chunk
        return TOPK_PAD[i % 2]
    p = topk_entry(vals, m)
    if q and i % 2 == 0:
        return vals[p]
    if pairs:
        return flat[2 * p + 1]
    return p + (q * ((i // (2 * k)) % chunk_geometry(d)[2]) if q else 0)


def _first_max(vals: list[int]) -> int:
    """Index of the first maximal value (strict comparison: the first index wins ties)."""
    best = 0
    for k, v in enumerate(vals):
        if v > vals[best]:
            best = k
    return best


def _first_max_pair(flat: list[int]) -> tuple[int, int]:
    """(value, index) of the first pair with the greatest value among (value, index) pairs."""
    k = _first_max(flat[0::2])
    return flat[2 * k], flat[2 * k + 1]


def run_op(d: OpDescriptor, inputs: list[bytes]) -> bytes:
    """Whole-op reference: every output element through element_ranges + compute_element."""
    check_descriptor(d)
    for k, (s, b) in enumerate(zip(d.inputs, inputs, strict=True)):
        if len(b) != s.type.nbytes:
            raise ProgramError(f"input {k}: {len(b)} bytes, the type says {s.type.nbytes}")
    width = d.out.dtype.width
    out = bytearray()
    for i in range(d.out.count):
        chunks = [inputs[r.input][r.start : r.end] for r in element_ranges(d, i, lambda k, s, e: inputs[k][s:e])]
        v = compute_element(d, i, chunks)
        out += to_le(v, width)
    return bytes(out)
