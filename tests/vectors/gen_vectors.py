"""Generate tests/vectors/ops_*.json and tensor_encoding.json from the Python scalar reference.

ops_<op>.json: per case, the op descriptor (docs/protocol.md section 3), its input tensors' roots and
depths, and for a few output elements the expected value plus every input byte range the element
needs, each with its Merkle range proof (leaves + boundary siblings) against the input's root. This
is exactly what the Solidity one-step verifier receives. Cases: random ones from
gpumesh.node.runtime.randprog (seeded) and hand-made edge cases (-128/127, saturation, rounding
ties, large K, padding). tests/unit/core_program/test_vectors.py checks the files are up to date.

    .venv/bin/python tests/vectors/gen_vectors.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gpumesh.client.core import merkle
from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.reference import compute_element, element_ranges
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime.randprog import OpCase, _case, exp_table, random_case, rope_table

HERE = Path(__file__).resolve().parent
RANDOM_CASES = 5
ELEMENTS = 3


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def _arr(v, shape, dt=np.int8):
    return np.broadcast_to(np.asarray(v, dtype=dt), shape).copy()


def edge_cases() -> dict[Opcode, list[tuple[str, OpCase]]]:
    I8, I32 = DType.INT8, DType.INT32
    k = 4096
    x, w, b = TensorType(I8, (2, k)), TensorType(I8, (3, k)), TensorType(I32, (3,))
    big = TensorType(I8, (1, 2, 2, 3))
    ties = np.array([-5, -3, -1, 1, 3, 5, 2**31 - 1, -(2**31)], dtype=np.int32)
    return {**_transformer_edges(), **{
        Opcode.LINEAR: [
            ("large K=4096, all -128 x -128, saturates at hi",
             _case(Opcode.LINEAR, [x, w, b], [_arr(-128, x.shape), _arr(-128, w.shape), _arr([0, 1, -1], b.shape, np.int32)],
                   x_zp=0, requant=Requant(ReqMode.PER_TENSOR, 1 << 30, 31, 0, -128, 127))),
            ("bias wraps int32: 127*127*4096 + (2^31-1)",
             _case(Opcode.LINEAR, [x, w, b], [_arr(127, x.shape), _arr(127, w.shape), _arr(2**31 - 1, b.shape, np.int32)],
                   x_zp=0, requant=Requant())),
            ("x_zp=-128 with x=127: (x - zp) = 255 at every k",
             _case(Opcode.LINEAR, [x, w, b], [_arr(127, x.shape), _arr(-128, w.shape), _arr(0, b.shape, np.int32)],
                   x_zp=-128, requant=Requant(ReqMode.PER_TENSOR, 2**31 - 1, 62, -128, -128, 127))),
        ],
        Opcode.REQUANT: [
            ("rounding ties: v/2 with v odd rounds half up (toward +inf)",
             _case(Opcode.REQUANT, [TensorType(I32, (8,))], [ties], requant=Requant(ReqMode.PER_TENSOR, 1, 1, 0, -128, 127))),
            ("extreme int32 times mult 2^31-1, shift 62, zp 127 saturating",
             _case(Opcode.REQUANT, [TensorType(I32, (8,))], [ties],
                   requant=Requant(ReqMode.PER_TENSOR, 2**31 - 1, 62, 127, -128, 127))),
        ],
        Opcode.ADD: [
            ("ties and saturation: (127 + 127) / 2 + 100",
             _case(Opcode.ADD, [TensorType(I8, (4,))] * 2, [_arr([127, -128, 1, -1], (4,)), _arr([127, -128, 0, 0], (4,))],
                   za=0, zb=0, ma=1, mb=1, shift=1, zy=100, lo=-128, hi=127)),
        ],
        Opcode.RELU: [("relu at -128 and 127 with zp 0", _case(Opcode.RELU, [TensorType(I8, (4,))],
                                                            [_arr([-128, -1, 0, 127], (4,))], zp=0))],
        Opcode.IM2COL: [("padding value -128 around a 2x2x3 image", _case(
            Opcode.IM2COL, [big], [_arr(np.arange(12).reshape(big.shape) - 6, big.shape)],
            kh=3, kw=3, sh=1, sw=1, ph=1, pw=1, pad=-128))],
        Opcode.MAXPOOL: [("all -128 window with padding", _case(
            Opcode.MAXPOOL, [big], [_arr(-128, big.shape)], kh=3, kw=3, sh=2, sw=2, ph=1, pw=1))],
        Opcode.AVGPOOL: [("sum of 127s with zp -128, ties", _case(
            Opcode.AVGPOOL, [big], [_arr(127, big.shape)], x_zp=-128,
            requant=Requant(ReqMode.PER_TENSOR, 1, 3, 0, -128, 127)))],
        Opcode.ARGMAX: [("ties: first index wins", _case(Opcode.ARGMAX, [TensorType(I8, (2, 5))],
                                                       [_arr([[3, 7, 7, -128, 7], [-128] * 5], (2, 5))]))],
        Opcode.CHUNKMAX: [
            ("ties inside and across chunks of 3, short last chunk: first index wins", _case(
                Opcode.CHUNKMAX, [TensorType(I8, (2, 7))], [_arr([[7, 1, 7, 7, 0, 7, -128], [-128] * 7], (2, 7))],
                q=3, pairs=0)),
            ("int32 extremes", _case(Opcode.CHUNKMAX, [TensorType(I32, (5,))],
                                     [_arr([-(2**31), 2**31 - 1, 2**31 - 1, -(2**31), 0], (5,), np.int32)], q=2, pairs=0)),
            ("pairs: tied values keep the first pair's index", _case(
                Opcode.CHUNKMAX, [TensorType(I32, (5, 2))],
                [_arr([[4, 10], [9, 11], [9, 12], [-(2**31), 13], [9, 14]], (5, 2), np.int32)], q=2, pairs=1))],
        Opcode.PAIRARGMAX: [("tied values: the first pair's index", _case(
            Opcode.PAIRARGMAX, [TensorType(I32, (1, 4, 2))],
            [_arr([[[5, 3], [2**31 - 1, 40000], [2**31 - 1, 7], [-1, 9]]], (1, 4, 2), np.int32)]))],
        Opcode.CHUNKSUM: [("sum of 127s with zp -128 over chunks of 5 of 3x3 positions", _case(
            Opcode.CHUNKSUM, [TensorType(I8, (1, 3, 3, 2))], [_arr(127, (1, 3, 3, 2))], x_zp=-128, q=5))],
        Opcode.SUMREQUANT: [("the accumulator wraps like wrap32", _case(
            Opcode.SUMREQUANT, [TensorType(I32, (2, 2))], [_arr([[2**31 - 1, 1], [-(2**31), -1]], (2, 2), np.int32)],
            requant=Requant(ReqMode.PER_TENSOR, 1, 1, 0, -128, 127)))],
    }}


def _transformer_edges() -> dict[Opcode, list[tuple[str, OpCase]]]:
    """Extremes of matmul, lut, mul and gather (docs/protocol.md 2.2)."""
    I8, I32 = DType.INT8, DType.INT32
    k = 768
    a, bt, b = TensorType(I8, (2, 3, k)), TensorType(I8, (2, 4, k)), TensorType(I8, (2, k, 4))
    req = Requant(ReqMode.PER_TENSOR, 1 << 30, 31, -3, -128, 127)
    tab = TensorType(I8, (5, 3))
    ids = np.array([-1, 0, 4, 5, -(2**31), 2**31 - 1], dtype=np.int32)
    ramp = _arr(np.arange(256) - 128, (256,))
    return {
        Opcode.MATMUL: [
            ("K=768, all 127 with zero points -128 (255*255*768), int32 out, B transposed",
             _case(Opcode.MATMUL, [a, bt], [_arr(127, a.shape), _arr(127, bt.shape)], ta=0, tb=1, za=-128, zb=-128,
                   requant=Requant())),
            ("K=768, all -128 x all 127 with zero points 127, requant saturates, B strided",
             _case(Opcode.MATMUL, [a, b], [_arr(-128, a.shape), _arr(127, b.shape)], ta=0, tb=0, za=127, zb=127,
                   requant=req)),
            ("A transposed, ties of the requant (mult 1, shift 1)",
             _case(Opcode.MATMUL, [TensorType(I8, (5, 3)), TensorType(I8, (5, 2))],
                   [_arr(np.arange(15).reshape(5, 3) - 7, (5, 3)), _arr(np.arange(10).reshape(5, 2) - 5, (5, 2))],
                   ta=1, tb=0, za=0, zb=1, requant=Requant(ReqMode.PER_TENSOR, 1, 1, 0, -128, 127))),
        ],
        Opcode.LUT: [("every int8 through a ramp table shifted by one",
                      _case(Opcode.LUT, [TensorType(I8, (256,)), TensorType(I8, (256,))],
                            [ramp, np.roll(ramp, 1)]))],
        Opcode.MUL: [("extremes: (-128 - 127) * (127 + 128) and ties", _case(
            Opcode.MUL, [TensorType(I8, (4,))] * 2, [_arr([-128, 127, 1, -1], (4,)), _arr([127, -128, 0, 1], (4,))],
            za=127, zb=-128, requant=Requant(ReqMode.PER_TENSOR, 1, 1, 0, -128, 127)))],
        Opcode.GATHER: [("ids -1, 0, V-1, V, int32 min and max: rows outside [0, V) are zero", _case(
            Opcode.GATHER, [TensorType(I32, (6,)), tab], [ids, _arr(np.arange(15).reshape(5, 3) + 1, tab.shape)]))],
        Opcode.SOFTMAX: _softmax_edges(),
        Opcode.LAYERNORM: _layernorm_edges(),
        Opcode.ROPE: _rope_edges(),
        Opcode.TOPK: _topk_edges(),
        **_view_edges(),
    }


def _view_edges() -> dict[Opcode, list[tuple[str, OpCase]]]:
    """concat: a KV-cache step (K [2, P, dh] + k_new [2, 1, dh] along the positions, P = 2,047 so the
    new row sits 8 leaves into each head), generated int32 tokens [B, N] + [B, 1] at the int32
    extremes, int8 along axis 0; slice: the last position of int32 logits [B, T, V] (what a decode
    step samples from), a middle range of an int8 axis 0, a whole axis."""
    I8, I32 = DType.INT8, DType.INT32
    cache, new = TensorType(I8, (2, 2047, 64)), TensorType(I8, (2, 1, 64))
    toks, tok = TensorType(I32, (3, 5)), TensorType(I32, (3, 1))
    ext = np.array([-(2**31), 2**31 - 1, -1, 0, 1], dtype=np.int32)
    logits = TensorType(I32, (2, 7, 9))
    x = TensorType(I8, (6, 3))
    ramp = _arr(np.arange(18).reshape(6, 3) * 15 - 128, x.shape)
    return {
        Opcode.CONCAT: [
            ("KV cache: K [2, 2047, 64] + k_new [2, 1, 64] along the positions",
             _case(Opcode.CONCAT, [cache, new], [_arr(np.arange(cache.count).reshape(cache.shape) % 255 - 127,
                                                      cache.shape), _arr(127, new.shape)], axis=1)),
            ("generated tokens int32 [3, 5] + [3, 1] at the int32 extremes",
             _case(Opcode.CONCAT, [toks, tok], [_arr(np.tile(ext, (3, 1)), toks.shape, np.int32),
                                                _arr([[2**31 - 1], [-(2**31)], [7]], tok.shape, np.int32)], axis=1)),
            ("int8 along axis 0, -128 then 127", _case(Opcode.CONCAT, [x, TensorType(I8, (2, 3))],
                                                        [_arr(-128, x.shape), _arr(127, (2, 3))], axis=0)),
        ],
        Opcode.SLICE: [
            ("the last position of int32 logits [2, 7, 9]",
             _case(Opcode.SLICE, [logits], [_arr(np.resize(ext, logits.shape), logits.shape, np.int32)],
                   axis=1, start=6, len=1)),
            ("rows [2, 5) of an int8 ramp", _case(Opcode.SLICE, [x], [ramp], axis=0, start=2, len=3)),
            ("the whole last axis", _case(Opcode.SLICE, [x], [ramp], axis=1, start=0, len=3)),
        ],
    }


def _topk_edges() -> list[tuple[str, OpCase]]:
    """topk: ties (rows all -128, all 127, few distinct values: lower index first), k = L (the whole
    order), one huge value; chunks with a short last chunk (padding pairs), pairs with int32
    extremes (clamped to the int8 range, ties by position); a row of 4,096."""
    I8, I32 = DType.INT8, DType.INT32
    rows = np.array([[-128] * 12, [127] * 12, [3, -1, 3, 7, -1, 3, 7, 7, 0, -128, 127, 3],
                     [-128] * 5 + [127] + [-128] * 6])
    x = TensorType(I8, rows.shape)
    pairs = np.array([[2**31 - 1, 5], [127, 6], [-(2**31), 7], [-128, 8], [200, 9], [-7, 10], [-7, 11]])
    big = TensorType(I8, (1, 4096))
    return [("ties, k = L: the whole order, lower index first on equal values",
             _case(Opcode.TOPK, [x], [_arr(rows, x.shape)], k=12, q=0, pairs=0)),
            ("chunks of 5 over 12 (last chunk 2 < k = 4: padding pairs)",
             _case(Opcode.TOPK, [x], [_arr(rows, x.shape)], k=4, q=5, pairs=0)),
            ("pairs with int32 extremes, clamped: 2^31-1, 127 and 200 tie at 127 (by position)",
             _case(Opcode.TOPK, [TensorType(I32, (7, 2))], [_arr(pairs, (7, 2), np.int32)], k=5, q=0, pairs=1)),
            ("pairs chunked by 3 with k = 2", _case(Opcode.TOPK, [TensorType(I32, (7, 2))],
                                                    [_arr(pairs, (7, 2), np.int32)], k=2, q=3, pairs=1)),
            ("a row of 4,096 (4 leaves), k = 50", _case(Opcode.TOPK, [big], [_arr(np.arange(4096) * 37 % 251 - 125,
                                                                                  big.shape)], k=50, q=0, pairs=0))]


def _rope_edges() -> list[tuple[str, OpCase]]:
    """rope: a, b = +-255 (all 127 / all -128 with x_zp -128 / 127) against table entries of
    +-2^15 and beyond (clamped: int32 min and max), so |acc| reaches 2 * 255 * 2^15; a real table
    (Llama frequencies) of 1,030 positions read at offset 1,024 up to its last row; heads [2, 3, 4, 8]."""
    I8, I32 = DType.INT8, DType.INT32
    x = TensorType(I8, (4, 8))
    rows = np.array([[127] * 8, [-128] * 8, [127] * 4 + [-128] * 4, list(range(-4, 4))])
    ext = np.array([[2**15, 2**15], [-(2**15), 2**15], [2**31 - 1, -(2**31)], [2**15 + 1, -(2**15) - 1]])
    tab = np.broadcast_to(ext[:, None, :], (4, 4, 2)).astype(np.int32)
    req = Requant(ReqMode.PER_TENSOR, 1, 17, 0, -128, 127)
    heads = TensorType(I8, (2, 3, 4, 8))
    real = rope_table(1030, 8)
    return [(f"pairs at +-255 against entries +-2^15 and beyond (clamped), x_zp {zp}",
             _case(Opcode.ROPE, [x, TensorType(I32, (4, 4, 2))], [_arr(rows, x.shape), tab], x_zp=zp, off=0,
                   requant=req)) for zp in (-128, 127)] + [
            ("heads [2,3,4,8], a real table of 1,030 positions at offset 1,026 (its last rows)",
             _case(Opcode.ROPE, [heads, TensorType(I32, real.shape)],
                   [_arr(np.arange(192).reshape(heads.shape) % 255 - 127, heads.shape), real], x_zp=-1, off=1026,
                   requant=Requant(ReqMode.PER_TENSOR, 1 << 15, 30, 2, -128, 127)))]


def _layernorm_edges() -> list[tuple[str, OpCase]]:
    """layernorm / rmsnorm rows: constant (eps 0: sigma = 0, y = requant(beta)), one outlier, a
    ramp, all 127 with x_zp -128; gamma -128 / 127, beta at the int32 extremes (wrap32); rows of
    768 and 8,192."""
    I8, I32 = DType.INT8, DType.INT32
    rows = np.full((4, 16), 5)
    rows[1] = -128
    rows[1, 3] = 127
    rows[2] = np.arange(16) * 17 - 128
    rows[3] = 127
    g = _arr(np.where(np.arange(16) % 2, 127, -128), (16,))
    b = np.array([2**31 - 1, -(2**31), 0, 1000] * 4, dtype=np.int32)
    req = Requant(ReqMode.PER_TENSOR, 1 << 20, 36, -3, -128, 127)
    ty = [TensorType(I8, (4, 16)), TensorType(I8, (16,)), TensorType(I32, (16,))]
    out = []
    for rms, eps in ((0, 0), (1, 0), (0, 1000)):
        out.append((f"{'rmsnorm' if rms else 'layernorm'} eps {eps}: constant row, one outlier, ramp, all 127",
                    _case(Opcode.LAYERNORM, ty, [_arr(rows, (4, 16)), g, b], x_zp=-128 if eps else 3, rms=rms,
                          eps=eps, requant=req)))
    rng = np.random.default_rng(14)
    for dd in (768, 8192):
        t = [TensorType(I8, (2, dd)), TensorType(I8, (dd,)), TensorType(I32, (dd,))]
        out.append((f"layernorm row of {dd}", _case(
            Opcode.LAYERNORM, t, [rng.integers(-128, 128, (2, dd)).astype(np.int8),
                                  rng.integers(-128, 128, dd).astype(np.int8),
                                  rng.integers(-(2**20), 2**20, dd).astype(np.int32)],
            x_zp=-7, rms=0, eps=5, requant=Requant(ReqMode.PER_TENSOR, 1 << 20, 30, 0, -128, 127))))
    return out


def _softmax_edges() -> list[tuple[str, OpCase]]:
    """softmax rows: all -128, all 127, one 127 among -128s, a ramp; causal with offsets 0 and 2;
    an arbitrary table (E[0] = 0, negative entries, entries above 2^15: the op clamps them)."""
    x, t = TensorType(DType.INT8, (4, 16)), TensorType(DType.INT32, (256,))
    rows = np.full((4, 16), -128)
    rows[1] = 127
    rows[2, 5] = 127
    rows[3] = np.arange(16) * 17 - 128
    real = exp_table(1 / 16)
    odd = ((np.arange(256) * 7919 % 70001) - 20000).astype(np.int32)
    odd[0] = 0
    big = TensorType(DType.INT8, (1, 4096))
    return [("rows all -128, all 127, one 127 among -128, a ramp; exp table of scale 1/16",
             _case(Opcode.SOFTMAX, [x, t], [_arr(rows, x.shape), real], causal=0, off=0)),
            ("the same rows causal, offset 0", _case(Opcode.SOFTMAX, [x, t], [_arr(rows, x.shape), real],
                                                      causal=1, off=0)),
            ("the ramp rows causal, offset 2, an arbitrary table (clamped)",
             _case(Opcode.SOFTMAX, [x, t], [_arr(np.tile(rows[3], (4, 1)), x.shape), odd], causal=1, off=2)),
            ("one row of 4,096 logits (4 leaves)", _case(
                Opcode.SOFTMAX, [big, t], [_arr(np.arange(4096) % 251 - 125, big.shape), real], causal=0, off=0))]


def step_bound_cases() -> list[tuple[str, OpCase, int]]:
    """Descriptors at and just over the one-step bounds (rules.MAX_STEP_LEAVES, MAX_STEP_ELEMENTS,
    MAX_K): (note, case, expected LibDescriptor reason: 0 accepted, 8 R_ATTR, 11 R_STEP)."""
    I8, I32 = DType.INT8, DType.INT32
    req = Requant(ReqMode.PER_TENSOR, 1 << 20, 40, 0, -128, 127)
    win = {"sh": 1, "sw": 1, "ph": 0, "pw": 0}

    def lin(k):
        return _case(Opcode.LINEAR, [TensorType(I8, (2, k)), TensorType(I8, (3, k)), TensorType(I32, (3,)),
                                     TensorType(I32, (3, 2))], [], out=TensorType(I8, (2, 3)), x_zp=0,
                     requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 0, -128, 127))

    def pool(shape):
        return _case(Opcode.AVGPOOL, [TensorType(I8, shape)], [], x_zp=0, requant=req)

    def amax(dt, k):
        return _case(Opcode.ARGMAX, [TensorType(dt, (2, k))], [])

    def mpool(shape, kh, kw, **kw_):
        return _case(Opcode.MAXPOOL, [TensorType(I8, shape)], [], kh=kh, kw=kw, **{**win, **kw_})

    def cmax(shape, dt, q, pairs=0, out=None):
        return _case(Opcode.CHUNKMAX, [TensorType(dt, shape)], [], out=out, q=q, pairs=pairs)

    def csum(shape, q):
        return _case(Opcode.CHUNKSUM, [TensorType(I8, shape)], [], x_zp=0, q=q)

    def mm(m, k, n, tb, ta=0):
        a = TensorType(I8, (k, m) if ta else (m, k))
        return _case(Opcode.MATMUL, [a, TensorType(I8, (n, k) if tb else (k, n))], [], out=TensorType(I8, (m, n)),
                     ta=ta, tb=tb, za=0, zb=0, requant=req)

    def gather(v):
        return _case(Opcode.GATHER, [TensorType(I32, (1, 16)), TensorType(I8, (v, 768))], [],
                     out=TensorType(I8, (1, 16, 768)))

    def lnorm(n, eps):
        return _case(Opcode.LAYERNORM, [TensorType(I8, (2, n)), TensorType(I8, (n,)), TensorType(I32, (n,))], [],
                     out=TensorType(I8, (2, n)), x_zp=0, rms=0, eps=eps, requant=req)

    def rope(t, dd, off, p):
        return _case(Opcode.ROPE, [TensorType(I8, (2, t, dd)), TensorType(I32, (p, dd // 2, 2))], [],
                     out=TensorType(I8, (2, t, dd)), x_zp=0, off=off, requant=req)

    def topk(shape, k, q, pairs=0, out=None):
        return _case(Opcode.TOPK, [TensorType(I32 if pairs else I8, shape)], [], out=out, k=k, q=q, pairs=pairs)

    def view(op, x, y=None, out=None, **attrs):
        return _case(op, [x] if y is None else [x, y], [], out=out, **attrs)

    def smax(n):
        return _case(Opcode.SOFTMAX, [TensorType(I8, (2, n)), TensorType(I32, (256,))], [], causal=1, off=0)

    return [
        ("matmul K = MAX_K = 32768, B transposed (68 leaves)", mm(2, 32768, 3, 1), 0),
        ("matmul K = 32769 above MAX_K", mm(2, 32769, 3, 1), 8),
        ("matmul B [92, 1024] read by column (96 leaves)", mm(2, 92, 1024, 0), 0),
        ("matmul B [93, 1024] read by column (97 leaves)", mm(2, 93, 1024, 0), 11),
        ("matmul A [93, 1024] read by column (97 leaves)", mm(1024, 93, 2, 1, ta=1), 11),
        ("gather from a 131,072-row table", gather(131072), 0),
        ("gather from a 131,073-row table", gather(131073), 7),
        ("linear K = MAX_K = 32768 (74 leaves)", lin(32768), 0),
        ("linear K = 32769 above MAX_K", lin(32769), 8),
        ("avgpool H*W = 16384 = MAX_STEP_ELEMENTS, C = 5 (82 leaves)", pool((1, 128, 128, 5)), 0),
        ("avgpool H*W = 16512 above MAX_STEP_ELEMENTS", pool((1, 128, 129, 1)), 11),
        ("avgpool block 96,256 bytes = 96 leaves = MAX_STEP_LEAVES", pool((1, 4, 4, 6016)), 0),
        ("avgpool block 96,272 bytes = 97 leaves", pool((1, 4, 4, 6017)), 11),
        ("avgpool 7x7x1920 (94,080 bytes)", pool((1, 7, 7, 1920)), 0),
        ("avgpool 7x7x2048 (100,352 bytes)", pool((1, 7, 7, 2048)), 11),
        ("avgpool 128x128x256 (4 MiB block)", pool((1, 128, 128, 256)), 11),
        ("argmax int8 K = 16384", amax(I8, 16384), 0),
        ("argmax int8 K = 16385", amax(I8, 16385), 11),
        ("argmax int32 K = 16384 (66 leaves)", amax(I32, 16384), 0),
        ("argmax int32 K = 16385", amax(I32, 16385), 11),
        ("argmax int32 K = 65536 classes", amax(I32, 65536), 11),
        ("maxpool 32x512 window, C = 1: 96 leaves, 16384 elements", mpool((1, 32, 1025, 1), 32, 512), 0),
        ("maxpool 32x513 window: 16416 elements", mpool((1, 32, 1025, 1), 32, 513), 11),
        ("maxpool 33x496 window: 99 leaves", mpool((1, 33, 1025, 1), 33, 496), 11),
        ("maxpool 32x2 window, C = 1024: 32 ranges of 1,025 bytes = 96 leaves", mpool((1, 32, 40, 1024), 32, 2), 0),
        ("maxpool 33x2 window, C = 1024: 99 leaves", mpool((1, 33, 40, 1024), 33, 2), 11),
        ("maxpool kernel 200 over an 8x8 image (window clipped to the image)",
         mpool((1, 8, 8, 1), 200, 200, ph=96, pw=96), 0),
        ("maxpool global 128x128 window over 256 channels", mpool((1, 128, 128, 256), 128, 128), 11),
        ("chunkmax int8 131072 classes, q = 16384", cmax((1, 131072), I8, 16384), 0),
        ("chunkmax int8 q = 16385", cmax((1, 131072), I8, 16385), 11),
        ("chunkmax int32 131072 classes, q = 16384 (66 leaves)", cmax((1, 131072), I32, 16384), 0),
        ("chunkmax int32 q = 16385", cmax((1, 131072), I32, 16385), 11),
        ("chunkmax q = 0", cmax((1, 100), I8, 0, out=TensorType(I32, (1, 1, 2))), 8),
        ("chunkmax q = K + 1", cmax((1, 100), I8, 101, out=TensorType(I32, (1, 1, 2))), 8),
        ("chunkmax pairs q = 8192 (16384 int32 elements)", cmax((1, 20000, 2), I32, 8192, 1), 0),
        ("chunkmax pairs q = 8193", cmax((1, 20000, 2), I32, 8193, 1), 11),
        ("pairargmax over 8192 pairs", _case(Opcode.PAIRARGMAX, [TensorType(I32, (2, 8192, 2))], []), 0),
        ("pairargmax over 8193 pairs", _case(Opcode.PAIRARGMAX, [TensorType(I32, (2, 8193, 2))], []), 11),
        ("chunksum 128x128x256, q = 377 (96 leaves)", csum((1, 128, 128, 256), 377), 0),
        ("chunksum 128x128x256, q = 378 (97 leaves)", csum((1, 128, 128, 256), 378), 11),
        ("chunksum 128x128x1, q = 16384", csum((1, 128, 128, 1), 16384), 0),
        ("chunksum 129x128x1, q = 16385", csum((1, 129, 128, 1), 16385), 11),
        ("softmax row of 16384 = MAX_STEP_ELEMENTS (22 leaves)", smax(16384), 0),
        ("softmax row of 16385", smax(16385), 11),
        ("layernorm row of 16384 = MAX_STEP_ELEMENTS (22 leaves)", lnorm(16384, 1), 0),
        ("layernorm row of 16385", lnorm(16385, 1), 11),
        ("layernorm eps * D^3 = 2^61 (D = 8192, eps = 2^22)", lnorm(8192, 1 << 22), 0),
        ("layernorm eps * D^3 above 2^61 (D = 8192, eps = 2^22 + 1)", lnorm(8192, (1 << 22) + 1), 8),
        ("rope D = 186,368: x[k .. k + D/2] is 93 + 3 leaves", rope(1, 186368, 0, 1), 0),
        ("rope D = 186,370: 97 leaves", rope(1, 186370, 0, 1), 11),
        ("rope positions T + off = P (T = 16, off = 4080, P = 4096)", rope(16, 64, 4080, 4096), 0),
        ("rope positions T + off = P + 1", rope(16, 64, 4081, 4096), 8),
        ("rope D odd", _case(Opcode.ROPE, [TensorType(I8, (2, 4, 7)), TensorType(I32, (4, 3, 2))], [],
                             out=TensorType(I8, (2, 4, 7)), x_zp=0, off=0, requant=req), 7),
        ("topk over a row of 16384 = MAX_STEP_ELEMENTS", topk((2, 16384), 40, 0), 0),
        ("topk over a row of 16385", topk((2, 16385), 40, 0), 11),
        ("topk chunked, q = 16384 over 131072", topk((1, 131072), 40, 16384), 0),
        ("topk chunked, q = 16385", topk((1, 131072), 40, 16385), 11),
        ("topk over 4096 pairs (4 x 4096 = 16384 counted)", topk((1, 4096, 2), 40, 0, 1), 0),
        ("topk over 4097 pairs", topk((1, 4097, 2), 40, 0, 1), 11),
        ("topk pairs chunked, q = 4096", topk((1, 20000, 2), 40, 4096, 1), 0),
        ("topk pairs chunked, q = 4097", topk((1, 20000, 2), 40, 4097, 1), 11),
        ("topk k = 0", topk((2, 10), 0, 0, out=TensorType(I32, (2, 1))), 8),
        ("topk k = L + 1", topk((2, 10), 11, 0, out=TensorType(I32, (2, 11))), 8),
        ("topk chunked q < k", topk((2, 10), 4, 3, out=TensorType(I32, (2, 4, 4, 2))), 8),
        ("concat int8 2^27 + 2^27 bytes along axis 0 (out 2^28 bytes)",
         view(Opcode.CONCAT, TensorType(I8, (1 << 27,)), TensorType(I8, (1 << 27,)), axis=0), 0),
        ("concat along axis 2 of a rank-2 tensor", view(Opcode.CONCAT, TensorType(I8, (2, 3)), TensorType(I8, (2, 3)),
                                                        out=TensorType(I8, (2, 6)), axis=2), 8),
        ("concat of int8 and int32", view(Opcode.CONCAT, TensorType(I8, (2, 3)), TensorType(I32, (2, 3)),
                                          out=TensorType(I8, (2, 6)), axis=1), 7),
        ("concat along axis 1 with another axis 0", view(Opcode.CONCAT, TensorType(I8, (2, 3)), TensorType(I8, (3, 1)),
                                                          out=TensorType(I8, (2, 4)), axis=1), 7),
        ("slice [4090, 4096) of 4096", view(Opcode.SLICE, TensorType(I32, (2, 4096)), axis=1, start=4090, len=6), 0),
        ("slice [4091, 4097) of 4096", view(Opcode.SLICE, TensorType(I32, (2, 4096)), out=TensorType(I32, (2, 6)),
                                            axis=1, start=4091, len=6), 8),
        ("slice of length 0", view(Opcode.SLICE, TensorType(I32, (2, 4096)), out=TensorType(I32, (2, 1)),
                                   axis=1, start=0, len=0), 8),
        ("sumrequant over 16384 partial sums", _case(Opcode.SUMREQUANT, [TensorType(I32, (1, 2, 16384))], [],
                                                     requant=req), 0),
        ("sumrequant over 16385 partial sums", _case(Opcode.SUMREQUANT, [TensorType(I32, (1, 2, 16385))], [],
                                                     requant=req), 11),
    ]


def step_bounds_json() -> dict:
    cases = [{"note": note, "descriptor": hx(c.desc.encode()), "reason": reason,
              "outBytes": c.desc.out.nbytes if reason == 0 else 0} for note, c, reason in step_bound_cases()]
    return {"numCases": len(cases), "cases": cases}


def _elements(case: OpCase, rng: np.random.Generator) -> list[int]:
    n = case.desc.out.count
    picks = {0, n - 1, int(rng.integers(0, n))}
    return sorted(picks)[:ELEMENTS]


def case_json(note: str, case: OpCase, rng: np.random.Generator) -> dict:
    d = case.desc
    data = [np.ascontiguousarray(a).tobytes() for a in case.inputs]
    levels = [merkle.tensor_levels(b) for b in data]
    inputs = [{"kind": int(s.kind), "index": s.index, "dtype": int(s.type.dtype), "shape": list(s.type.shape),
               "nbytes": s.type.nbytes, "root": hx(lv[-1][0]), "depth": len(lv) - 1}
              for s, lv in zip(d.inputs, levels, strict=True)]
    elements = []
    for e in _elements(case, rng):
        ranges, chunks = [], []
        for r in element_ranges(d, e, lambda k, s, e_: data[k][s:e_]):
            first, last = r.start // LEAF_BYTES, -(-r.end // LEAF_BYTES)
            p = merkle.range_proof(data[r.input], first, last, levels[r.input])
            chunk = data[r.input][r.start : r.end]
            chunks.append(chunk)
            ranges.append({"input": r.input, "start": r.start, "end": r.end, "bytes": hx(chunk),
                           "leafStart": p.start, "leafEnd": p.end, "leaves": hx(p.leaves),
                           "siblings": [hx(s) for s in p.siblings]})
        elements.append({"index": e, "value": compute_element(d, e, chunks), "ranges": ranges})
    return {"note": note, "descriptor": hx(d.encode()), "opLeaf": hx(merkle.op_leaf(d.encode())),
            "inputs": inputs, "out": {"dtype": int(d.out.dtype), "shape": list(d.out.shape),
                                      "nbytes": d.out.nbytes}, "elements": elements}


def generate() -> dict[str, dict]:
    files: dict[str, dict] = {}
    edges = edge_cases()
    for op in Opcode:
        rng = np.random.default_rng(1000 + int(op))

        def draw(lo, hi, rng=rng):
            return int(rng.integers(lo, hi + 1))

        cases = [case_json(note, c, rng) for note, c in edges.get(op, [])]
        cases += [case_json(f"random {i}", random_case(draw, op, max_dim=5, max_k=1500), rng)
                  for i in range(RANDOM_CASES)]
        files[f"ops_{op.name.lower()}.json"] = {"op": op.name.lower(), "opcode": int(op), "leafBytes": LEAF_BYTES,
                                                "numCases": len(cases), "cases": cases}
    enc = []
    for dt, vals, shape in [(DType.INT8, [-128, -1, 0, 1, 127], [5]), (DType.INT32, [-(2**31), -1, 0, 1, 2**31 - 1, 256],
                                                                       [2, 3])]:
        b = np.array(vals, dtype=np.int8 if dt == DType.INT8 else "<i4").tobytes()
        enc.append({"dtype": int(dt), "shape": shape, "values": vals, "bytes": hx(b), "root": hx(merkle.tensor_root(b)),
                    "typeEncoding": hx(TensorType(dt, tuple(shape)).encode())})
    files["tensor_encoding.json"] = {"leafBytes": LEAF_BYTES, "cases": enc}
    files["step_bounds.json"] = step_bounds_json()
    return files


def render(obj: dict) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def main() -> int:
    for name, obj in generate().items():
        (HERE / name).write_text(render(obj))
        print(f"wrote tests/vectors/{name} ({len(render(obj)) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
