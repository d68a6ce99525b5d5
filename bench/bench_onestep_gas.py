"""One-step gas of Int8Verifier on anvil for linear with K = 1,024 and K = 4,096 (goal:
<= 1M for K = 1,024), for one representative element of every op, and (--worst) for the worst
valid element of every op at the step bounds of docs/protocol.md 3.4 (MAX_STEP_LEAVES,
MAX_STEP_ELEMENTS, MAX_K; goal: every one <= 5M gas with the game's own ~90k). Each op is placed in the
reference job of docs/protocol.md 5.6: 1,024 units, 1,024 ops (input 0 is agreed trace slot 1,022
of op 1,023, depth 10), 64 weights. Two figures per element:
  tx    eth_estimateGas of a direct `verify` transaction: 21k base + calldata + execution. Under
        Prague's EIP-7623 calldata floor (anvil's default fork) large proofs cost their floor.
  exec  gas a contract pays for the `verify` call (GasProbe: gasleft() around the call): what
        DisputeGame.step spends on the verdict beyond its own calldata.
Prints both, the calldata bytes, and each op's figures as a ratio of the cheapest one-step (relu:
one byte, one leaf) measured in the same run.

    .venv/bin/python bench/bench_onestep_gas.py [--json] [--worst] [--only SUBSTRING]

--worst: input 0 is a tensor of 2^27..2^28 bytes (Merkle depth 17..18, the most siblings a range
proof can carry), the element the one whose ranges straddle the most leaves.
--only: measure only the rows whose name contains SUBSTRING (the first row, relu, is always kept
in the default table: the ratios need it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from web3 import Web3

from gpumesh.client.chain.anvil import start_anvil
from gpumesh.client.core import merkle
from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.reference import compute_element, element_ranges
from gpumesh.client.core.ops.rules import (
    MAX_K,
    MAX_STEP_ELEMENTS,
    MAX_STEP_LEAVES,
    check_descriptor,
    step_reads,
)
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, SlotKind, SlotRef, TensorType
from gpumesh.node.dispute.int8_prover import JobInputs, SlotSource, encode_proofs
from gpumesh.node.runtime.randprog import OpCase, _case, exp_table, rope_table

ROOT = Path(__file__).resolve().parents[1]
UNITS, OPS, WEIGHTS = 1024, 1024, 64
OP_INDEX, X_SLOT, UNIT = OPS - 1, OPS - 2, 513
I8, I32 = DType.INT8, DType.INT32
GOAL_K1024 = 1_000_000
GOAL_WORST = 5_000_000
GAME_OVERHEAD = 90_000  # DisputeGame.step's own checks and settlement around the verdict


def _rng(tag: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big"))


def _arr(tag: str, t: TensorType) -> np.ndarray:
    g = _rng(tag)
    if t.dtype == I8:
        return g.integers(-128, 128, t.shape).astype(np.int8)
    return g.integers(-(2**24), 2**24, t.shape).astype(np.int32)


def _big(tag: str, t: TensorType) -> np.ndarray:
    """Random bytes of any size without int64 temporaries (every bit pattern is a valid element)."""
    return np.frombuffer(_rng(tag).bytes(t.nbytes), dtype=np.int8 if t.dtype == I8 else "<i4").reshape(t.shape)


def _qp(n: int) -> np.ndarray:
    g = _rng(f"qp{n}")
    return np.stack([g.integers(2**29, 2**31 - 1, n), g.integers(30, 40, n)], axis=1).astype(np.int32)


def linear(k: int, mode: ReqMode) -> OpCase:
    x, w, b = TensorType(I8, (64, k)), TensorType(I8, (256, k)), TensorType(I32, (256,))
    types, arrs = [x, w, b], [_arr("x", x), _arr("w", w), _arr("b", b)]
    req = Requant()
    if mode == ReqMode.PER_CHANNEL:
        types.append(TensorType(I32, (256, 2)))
        arrs.append(_qp(256))
        req = Requant(mode, 0, 0, 3, -128, 127)
    return _case(Opcode.LINEAR, types, arrs, x_zp=-5, requant=req)


def cases() -> dict[str, tuple[OpCase, int]]:
    img = TensorType(I8, (1, 28, 28, 16))
    pool = TensorType(I8, (1, 28, 28, 64))
    win = {"kh": 3, "kw": 3, "sh": 2, "sw": 2, "ph": 1, "pw": 1}
    t64 = TensorType(I8, (64, 1024))
    i32 = TensorType(I32, (64, 256))
    ap = TensorType(I8, (1, 8, 8, 256))
    tr = TensorType(I8, (1, 32, 32, 64))
    lg = TensorType(I32, (1, 1000))
    head, pairs = TensorType(I32, (1, 131072)), TensorType(I32, (1, 8, 2))
    fmap, sums = TensorType(I8, (1, 128, 128, 256)), TensorType(I32, (1, 256, 44))
    return {
        "relu [64,1024]": (_case(Opcode.RELU, [t64], [_arr("r", t64)], zp=0), 40_000),
        "linear K=1024 per-channel": (linear(1024, ReqMode.PER_CHANNEL), 64 * 256 // 2 + 77),
        "linear K=1024 int32 out": (linear(1024, ReqMode.NONE), 64 * 256 // 2 + 77),
        "linear K=4096 per-channel": (linear(4096, ReqMode.PER_CHANNEL), 64 * 256 // 2 + 77),
        "linear K=4096 int32 out": (linear(4096, ReqMode.NONE), 64 * 256 // 2 + 77),
        "requant [64,256] per-channel": (_case(Opcode.REQUANT, [i32, TensorType(I32, (256, 2))],
                                               [_arr("q", i32), _qp(256)],
                                               requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 0, -128, 127)), 9_000),
        "add [64,1024]": (_case(Opcode.ADD, [t64, t64], [_arr("a", t64), _arr("b", t64)], za=1, zb=-2,
                                ma=2**30, mb=2**29, shift=31, zy=4, lo=-128, hi=127), 40_000),
        "im2col 3x3 [1,28,28,16]": (_case(Opcode.IM2COL, [img], [_arr("i", img)], pad=0,
                                          **{**win, "sh": 1, "sw": 1}), 100_000),
        "maxpool 3x3/2 [1,28,28,64]": (_case(Opcode.MAXPOOL, [pool], [_arr("m", pool)], **win), 7_000),
        "avgpool global [1,8,8,256]": (_case(Opcode.AVGPOOL, [ap], [_arr("g", ap)], x_zp=3,
                                             requant=Requant(ReqMode.PER_TENSOR, 2**31 - 1, 37, 0, -128, 127)), 200),
        "argmax int32 [1,1000]": (_case(Opcode.ARGMAX, [lg], [_arr("l", lg)]), 0),
        "reshape int32 [64,256]": (_case(Opcode.RESHAPE, [i32], [_arr("s", i32)], out=TensorType(I32, (16384,))), 9_999),
        "transpose [1,32,32,64] (0,3,1,2)": (_case(Opcode.TRANSPOSE, [tr], [_arr("t", tr)], perm=(0, 3, 1, 2)), 33_333),
        # the chunked ops of the two exported models of tests/integration/verifier/test_games_chunked.py
        "chunkmax int32 [1,131072] q=16384": (_case(Opcode.CHUNKMAX, [head], [_arr("c", head)], q=16384, pairs=0), 15),
        "pairargmax [1,8,2]": (_case(Opcode.PAIRARGMAX, [pairs], [_arr("p", pairs)]), 0),
        "chunksum [1,128,128,256] q=377": (_case(Opcode.CHUNKSUM, [fmap], [_arr("k", fmap)], x_zp=3, q=377), 255 * 44),
        "sumrequant [1,256,44]": (_case(Opcode.SUMREQUANT, [sums], [_arr("s", sums)],
                                        requant=Requant(ReqMode.PER_TENSOR, 97686, 23, 0, -128, 127)), 255),
        **transformer_cases(),
    }


def _mm(tag: str, a: TensorType, b: TensorType, tb: int, req: Requant, zb: int = 0) -> OpCase:
    return _case(Opcode.MATMUL, [a, b], [_arr(f"{tag}a", a), _arr(f"{tag}b", b)], ta=0, tb=tb, za=-3, zb=zb,
                 requant=req)


def transformer_cases() -> dict[str, tuple[OpCase, int]]:
    """The integer transformer ops at transformer sizes (issue #13): matmul with K = 768 and 4,096
    (Q·K^T: B transposed, both rows contiguous; P·V: B read by column), lut, mul, gather from a
    131,072-row embedding table (an id inside, and one outside [0, V))."""
    req = Requant(ReqMode.PER_TENSOR, 1 << 20, 38, 1, -128, 127)
    q768, k768 = TensorType(I8, (12, 64, 768)), TensorType(I8, (12, 64, 768))
    q4k, k4k = TensorType(I8, (2, 64, 4096)), TensorType(I8, (2, 64, 4096))
    p768, v768 = TensorType(I8, (12, 64, 768)), TensorType(I8, (12, 768, 64))
    x = TensorType(I8, (64, 1024))
    ids, emb = TensorType(I32, (1, 256)), TensorType(I8, (131072, 768))
    ids_arr = _rng("ids").integers(0, 131072, (1, 256)).astype(np.int32)
    ids_arr[0, 255] = 131072  # out of range: a zero row, no table range opened
    emb_arr = _big("emb", emb)
    e_in = 7 * 768 + 500  # row 7's id, column 500
    return {
        "matmul Q.K^T K=768 int8 (B transposed)": (_mm("m1", q768, k768, 1, req, zb=2), 11 * 64 * 64 + 777),
        "matmul Q.K^T K=768 int32 out": (_mm("m2", q768, k768, 1, Requant()), 11 * 64 * 64 + 777),
        "matmul K=4096 int8 (B transposed)": (_mm("m3", q4k, k4k, 1, req, zb=2), 64 * 64 + 777),
        "matmul K=4096 int32 out": (_mm("m4", q4k, k4k, 1, Requant()), 64 * 64 + 777),
        "matmul P.V K=768 (B by column, N=64)": (_mm("m5", p768, v768, 0, req, zb=2), 11 * 64 * 64 + 777),
        "lut [64,1024] (256-entry table)": (_case(Opcode.LUT, [x, TensorType(I8, (256,))],
                                                  [_arr("lx", x), _arr("lt", TensorType(I8, (256,)))]), 40_000),
        "mul [64,1024]": (_case(Opcode.MUL, [x, x], [_arr("ma", x), _arr("mb", x)], za=3, zb=-1,
                                requant=Requant(ReqMode.PER_TENSOR, 1 << 20, 27, 0, -128, 127)), 40_000),
        "gather [131072,768] table, id in range": (_case(Opcode.GATHER, [ids, emb], [ids_arr, emb_arr]), e_in),
        "gather [131072,768] table, id = V": (_case(Opcode.GATHER, [ids, emb], [ids_arr, emb_arr]), 255 * 768 + 5),
        **_softmax_cases(),
        **_layernorm_cases(),
        **_rope_cases(),
        **_topk_cases(),
        **vocab_cases(),
        **_view_cases(),
    }


def _view_cases() -> dict[str, tuple[OpCase, int]]:
    """concat and slice (docs/protocol.md 2.2.5) as a decode step uses them: the KV cache of 12 heads
    x 4,095 positions of size 64 grown by one row (the new row: input 1; a cached row: input 0), the
    generated int32 tokens [8, 1023] + [8, 1], and the last position of int32 logits [1, 64, 50257]."""
    cache, new = TensorType(I8, (12, 4095, 64)), TensorType(I8, (12, 1, 64))
    kv = _case(Opcode.CONCAT, [cache, new], [_arr("kc", cache), _arr("kn", new)], axis=1)
    toks, tok = TensorType(I32, (8, 1023)), TensorType(I32, (8, 1))
    logits = TensorType(I32, (1, 64, 50257))
    return {
        "concat KV cache [12,4095,64] + [12,1,64], the new row": (kv, kv.desc.out.count - 1),
        "concat KV cache [12,4095,64] + [12,1,64], a cached row": (kv, 11 * 4096 * 64 + 2047 * 64 + 5),
        "concat tokens int32 [8,1023] + [8,1]": (_case(Opcode.CONCAT, [toks, tok], [_arr("tc", toks), _arr("tn", tok)],
                                                        axis=1), 8 * 1024 - 1),
        "slice int32 logits [1,64,50257] last position": (_case(Opcode.SLICE, [logits], [_arr("sl", logits)], axis=1,
                                                                start=63, len=1), 50256),
    }


def _topk_cases() -> dict[str, tuple[OpCase, int]]:
    """topk (k = 50) over rows of 4,096 and 16,384 int8 logits in one op (the last element: rank
    49), and a row whose top is 50 equal values (the second scan runs to the row's end)."""
    out = {}
    for n in (4096, 16384):
        x = TensorType(I8, (8, n))
        out[f"topk k=50 row {n}"] = (_case(Opcode.TOPK, [x], [_arr(f"k{n}", x)], k=50, q=0, pairs=0), 8 * 50 - 1)
    tied = np.full((2, 16384), -5, dtype=np.int8)
    tied[:, -50:] = 9
    out["topk k=50 row 16384, 50 tied at the end"] = (_case(Opcode.TOPK, [TensorType(I8, tied.shape)], [tied], k=50,
                                                            q=0, pairs=0), 2 * 50 - 1)
    return out


def vocab_cases() -> dict[str, tuple[OpCase, int]]:
    """Argmax and top-k over an LLM vocabulary (50,257: GPT-2; 131,072: Llama 3) as the export
    lowers them (export.chunk_reductions for argmax: chunkmax + pairargmax; top-k: lower_topk, 2.2.4:
    per chunk of 16,384 its k best pairs, then a top-k of the candidate pairs): every step kind,
    each at the element that reads a whole chunk."""
    import torch

    from gpumesh.client.core.program import Program
    from gpumesh.node.runtime import kernels
    from gpumesh.node.runtime.export import chunk_reductions
    from gpumesh.node.runtime.lower_topk import topk_ops

    out = {}
    for v in (50257, 131072):
        for dt in (I8, I32):
            x = TensorType(dt, (1, v))
            head = [] if dt == I8 else [{"name": "x", "op": "linear", "inputs": ["h", "w", "b"],
                                         "out": {"dtype": "int32", "shape": [1, v]},
                                         "attrs": {"x_zp": 0, "requant": {"mode": "none"}}}]
            prog = {"format": "gpumesh.program", "version": 1,  # int32 logits: a linear head's output
                    "input": {"name": "x" if dt == I8 else "h", "dtype": "int8", "shape": [1, v if dt == I8 else 16]},
                    "weights": [] if dt == I8 else [{"name": "w", "dtype": "int8", "shape": [v, 16]},
                                                    {"name": "b", "dtype": "int32", "shape": [v]}],
                    "ops": [*head, {"name": "y", "op": "argmax", "inputs": ["x"], "out": {"dtype": "int32", "shape": [1]},
                                    "attrs": {}}]}
            ops = Program.from_json(chunk_reductions(prog)).ops[len(head):]
            xa = _arr(f"v{v}{dt.label}", x)
            arr = xa
            for op in ops:
                d = op.desc
                case = _case(d.opcode, [d.inputs[0].type], [arr], **dict(d.attrs))
                attrs = ", ".join(f"{a}={b}" for a, b in d.attrs)
                out[f"vocab argmax {v} {dt.label}: {d.opcode.name.lower()} {list(d.inputs[0].type.shape)} {attrs}"] = (
                    case, 0)
                arr = kernels.run_op(d, [torch.from_numpy(np.array(arr))]).numpy()
        x = TensorType(I8, (1, v))
        xa = _arr(f"t{v}", x)
        for k, chunk in ((10, None), (50, None), (50, 8192)):  # None: the largest q the bounds allow
            arr = xa
            prog = Program.from_json({"format": "gpumesh.program", "version": 1, "weights": [],
                                      "input": {"name": "x", "dtype": "int8", "shape": [1, v]},
                                      "ops": topk_ops("y", "x", x, k, chunk)})
            for d in (op.desc for op in prog.ops):  # topk levels and the reshapes between them
                if d.opcode == Opcode.TOPK:
                    e = 2 * k - 1 if d.attr("q") else k - 1  # chunk 0's rank k-1 index, or rank k-1
                    out[f"vocab topk k={k} {v}: topk {list(d.inputs[0].type.shape)} q={d.attr('q')} "
                        f"pairs={d.attr('pairs')}"] = (_case(Opcode.TOPK, [d.inputs[0].type], [arr], **dict(d.attrs)), e)
                arr = kernels.run_op(d, [torch.from_numpy(np.array(arr))]).numpy()
    return out


def _rope_cases() -> dict[str, tuple[OpCase, int]]:
    """rope over 8 heads x 4,096 positions at head sizes 64 and 128 (the last element: second half,
    position 4,095), and one generated token at position 8,191 (T = 1, off = 8,191)."""
    req = Requant(ReqMode.PER_TENSOR, 1 << 15, 30, 0, -128, 127)
    out = {}
    for dd in (64, 128):
        x, tab = TensorType(I8, (8, 4096, dd)), TensorType(I32, (8192, dd // 2, 2))
        tab_arr = rope_table(8192, dd)
        out[f"rope [8,4096,{dd}] pos 4095"] = (_case(Opcode.ROPE, [x, tab], [_arr(f"r{dd}", x), tab_arr], x_zp=0,
                                                     off=0, requant=req), x.count - 1)
        one = TensorType(I8, (8, 1, dd))
        out[f"rope [8,1,{dd}] KV-cache pos 8191"] = (_case(Opcode.ROPE, [one, tab], [_arr(f"g{dd}", one), tab_arr],
                                                          x_zp=0, off=8191, requant=req), one.count - 1)
    return out


def _layernorm_cases() -> dict[str, tuple[OpCase, int]]:
    """layernorm / rmsnorm over rows of 768 and 8,192 (the last element)."""
    req = Requant(ReqMode.PER_TENSOR, 1 << 20, 30, 0, -128, 127)
    out = {}
    for n in (768, 8192):
        x, g, b = TensorType(I8, (64, n)), TensorType(I8, (n,)), TensorType(I32, (n,))
        for rms in (0, 1):
            out[f"{'rmsnorm' if rms else 'layernorm'} row {n}"] = (_case(
                Opcode.LAYERNORM, [x, g, b], [_arr(f"n{n}", x), _arr(f"g{n}", g), _arr(f"b{n}", b)], x_zp=-3,
                rms=rms, eps=7, requant=req), x.count - 1)
    return out


def _softmax_cases() -> dict[str, tuple[OpCase, int]]:
    """softmax over rows of 1,024 and 4,096 logits: the last element of a full row (no mask, and
    causal at the last query position, where the whole row is unmasked)."""
    tab = exp_table(1 / 16)
    out = {}
    for n in (1024, 4096):
        x = TensorType(I8, (12, 8, n))
        xa = _arr(f"s{n}", x)
        for causal, off in ((0, 0), (1, n - 8)):
            name = f"softmax row {n}" + (" causal (last query)" if causal else "")
            out[name] = (_case(Opcode.SOFTMAX, [x, TensorType(I32, (256,))], [xa, tab], causal=causal, off=off),
                         x.count - 1)
    return out


def worst_cases() -> dict[str, tuple[Callable[[], OpCase], int]]:
    """The worst valid element of every op at the bounds: the most leaves (a range that straddles
    one more leaf than its length needs wherever the layout allows) and the most scanned elements."""
    k = MAX_K
    xl, wl, bl = TensorType(I8, (8192, k)), TensorType(I8, (4096, k)), TensorType(I32, (4096,))
    pc = Requant(ReqMode.PER_CHANNEL, 0, 0, 3, -128, 127)
    def lin():
        return _case(Opcode.LINEAR, [xl, wl, bl, TensorType(I32, (4096, 2))], [_big("x", xl), _big("w", wl),
                     _big("b", bl), _qp(4096)], x_zp=-5, requant=pc)
    def lin32():
        return _case(Opcode.LINEAR, [xl, wl, bl], [_big("x", xl), _big("w", wl), _big("b", bl)], x_zp=-5,
                     requant=Requant())
    # maxpool: 32 rows x 512 columns (C = 1) = MAX_STEP_ELEMENTS, 32 ranges x 3 = MAX_STEP_LEAVES;
    # the window at iw0 = 768 of 2,048-byte rows straddles two leaves in every row.
    mp = TensorType(I8, (4096, 32, 2048, 1))
    mp_e = (4095 * 1537 + 768)
    # maxpool with C = 1,024: kw = 2 makes each row range 1,025 bytes (3 counted; 3 touched from
    # the last byte of a leaf), 32 rows
    mc = TensorType(I8, (192, 32, 40, 1024))
    mc_e = (191 * 39 + 20) * 1024 + 1023
    ic = TensorType(I8, (16, 24, 40, 1024))  # im2col's output is 9x its input
    # avgpool: H*W = MAX_STEP_ELEMENTS with the widest C the leaves allow; and the largest block
    ap = TensorType(I8, (3276, 128, 128, 5))
    ab = TensorType(I8, (2788, 4, 4, 6016))
    req = Requant(ReqMode.PER_TENSOR, 2**31 - 1, 44, 0, -128, 127)
    a8 = TensorType(I8, (16384, MAX_STEP_ELEMENTS))
    a32 = TensorType(I32, (4096, MAX_STEP_ELEMENTS))
    big = TensorType(I8, (1 << 14, 1 << 14))
    b32 = TensorType(I32, (1 << 12, 1 << 14))
    win = {"sh": 1, "sw": 1, "ph": 0, "pw": 0}
    # chunked ops: rows whose length is not a multiple of a leaf, and the row whose chunk 0 starts
    # on the last byte (int32: the last element) of a leaf, so the range touches one more leaf
    c8, c32 = TensorType(I8, (8192, 32767)), TensorType(I32, (2048, 32767))
    cp, pa = TensorType(I32, (2048, 16383, 2)), TensorType(I32, (4096, 8191, 2))
    cs, sr = TensorType(I8, (2730, 127, 129, 6)), TensorType(I32, (4096, 16383))
    return {
        f"linear K={k} per-channel": (lin, 8191 * 4096 + 4095),
        f"linear K={k} int32 out": (lin32, 8191 * 4096 + 4095),
        "requant per-channel": (lambda: _case(Opcode.REQUANT, [b32, TensorType(I32, (1 << 14, 2))], [_big("q", b32), _qp(1 << 14)],
                                      requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 0, -128, 127)), b32.count - 1),
        "add": (lambda: _case(Opcode.ADD, [big, big], [_big("a", big), _big("b", big)], za=1, zb=-2, ma=2**30, mb=2**29,
                      shift=31, zy=4, lo=-128, hi=127), big.count - 1),
        "relu": (lambda: _case(Opcode.RELU, [big], [_big("r", big)], zp=0), big.count - 1),
        "im2col 3x3": (lambda: _case(Opcode.IM2COL, [ic], [_big("i", ic)], kh=3, kw=3, pad=0, **win), 12345),
        "maxpool 32x512 C=1 (64 leaves)": (lambda: _case(Opcode.MAXPOOL, [mp], [_big("m", mp)], kh=32, kw=512, **win), mp_e),
        "maxpool 32x2 C=1024": (lambda: _case(Opcode.MAXPOOL, [mc], [_big("m", mc)], kh=32, kw=2, **win), mc_e),
        "avgpool [128,128,5]": (lambda: _case(Opcode.AVGPOOL, [ap], [_big("g", ap)], x_zp=3, requant=req), ap.shape[0] * 5 - 1),
        "avgpool [4,4,6016]": (lambda: _case(Opcode.AVGPOOL, [ab], [_big("g", ab)], x_zp=3, requant=req), ab.count // 16 - 1),
        f"argmax int8 K={MAX_STEP_ELEMENTS}": (lambda: _case(Opcode.ARGMAX, [a8], [_big("l", a8)]), a8.shape[0] - 1),
        f"argmax int32 K={MAX_STEP_ELEMENTS}": (lambda: _case(Opcode.ARGMAX, [a32], [_big("l", a32)]), a32.shape[0] - 1),
        "reshape int32": (lambda: _case(Opcode.RESHAPE, [b32], [_big("s", b32)], out=TensorType(I32, (b32.count,))),
                          b32.count - 1),
        "transpose int32 (1,0)": (lambda: _case(Opcode.TRANSPOSE, [b32], [_big("t", b32)], perm=(1, 0, 2, 3)),
                                  b32.count - 1),
        # element (row, chunk 0, index): rows 7169 / 1793 / 1921 start at byte 1023 / 1020 / 1016 of a leaf
        f"chunkmax int8 q={MAX_STEP_ELEMENTS}": (lambda: _case(Opcode.CHUNKMAX, [c8], [_big("c", c8)], q=MAX_STEP_ELEMENTS,
                                                               pairs=0), 7169 * 4 + 1),
        f"chunkmax int32 q={MAX_STEP_ELEMENTS}": (lambda: _case(Opcode.CHUNKMAX, [c32], [_big("c", c32)],
                                                                q=MAX_STEP_ELEMENTS, pairs=0), 1793 * 4 + 1),
        "chunkmax pairs q=8192": (lambda: _case(Opcode.CHUNKMAX, [cp], [_big("c", cp)], q=8192, pairs=1), 1921 * 4 + 1),
        # 8,191 pairs per row; row 3969 starts at byte 1016 of a leaf
        "pairargmax G=8191": (lambda: _case(Opcode.PAIRARGMAX, [pa], [_big("p", pa)]), 3969),
        # H*W = 16,383 positions, C = 6, q = 16,043 (96 leaves); sample 1's channel 5 starts on byte
        # 1023 of a leaf: element (n 1, c 5, chunk 0) of [N, 6, 2]
        "chunksum C=6 q=16043": (lambda: _case(Opcode.CHUNKSUM, [cs], [_big("k", cs)], x_zp=3, q=16043), (6 + 5) * 2),
        # 16,383 partial sums per row; row 3841 starts at byte 1020 of a leaf
        "sumrequant G=16383": (lambda: _case(Opcode.SUMREQUANT, [sr], [_big("s", sr)], requant=req), 3841),
        **transformer_worst(),
    }


def transformer_worst() -> dict[str, tuple[Callable[[], OpCase], int]]:
    """matmul at MAX_K with both rows contiguous, and with B read by column at 96 leaves (B [92,
    1024]: 93,185 bytes strided by N = 1,024), each element's rows starting on a leaf's last byte
    where the layout allows; lut, mul, gather on 2^28-byte tensors (the deepest trees)."""
    k = MAX_K
    req = Requant(ReqMode.PER_TENSOR, 1 << 20, 38, 1, -128, 127)
    # A [8191, K], B^T [4096, K]: rows start at multiples of 32 KiB (on a leaf boundary)
    ma, mb = TensorType(I8, (8191, k)), TensorType(I8, (4096, k))
    # B by column: A [*, 92] rows of 92 bytes; B [92, 1024] column 1023 ends on the last byte
    sa, sb = TensorType(I8, (2, 131072, 92)), TensorType(I8, (2, 92, 1024))
    big = TensorType(I8, (1 << 14, 1 << 14))
    ids, emb = TensorType(I32, (1, 1 << 17)), TensorType(I8, (1 << 17, 2048))

    def gather():
        a = _rng("gw").integers(0, 1 << 17, ids.shape).astype(np.int32)
        a[0, -1] = (1 << 17) - 1
        return _case(Opcode.GATHER, [ids, emb], [a, _big("emb", emb)])

    srow = TensorType(I8, (64, 16384))
    # rope at its leaf bound: D = 186,368 (x[k .. k + D/2] is 93,185 bytes), both tensors ~2^28 bytes;
    # the element whose span starts on a leaf's last byte
    rx, rt = TensorType(I8, (4, 360, 186368)), TensorType(I32, (360, 93184, 2))
    r0 = (rx.count // 186368 - 1) * 186368
    rk = next(k for k in range(93184) if (r0 + k) % LEAF_BYTES == LEAF_BYTES - 1)
    def topk_worst(pairs: int):
        # the last row's only 127 at its end: the second scan runs over the whole row (m = 0)
        t = TensorType(I32, (8192, 4096, 2)) if pairs else TensorType(I8, (16384, 16384))
        a = _big("kw", t).copy()
        if pairs:
            a[-1, :, 0] = -128
            a[-1, -1, 0] = 127
        else:
            a[-1] = -128
            a[-1, -1] = 127
        return _case(Opcode.TOPK, [t], [a], k=50, q=0, pairs=pairs)

    # views: one element of a 2^28-byte tensor (depth 18), from either input of a concat
    half = TensorType(I8, (1 << 27,))

    def cat():
        return _case(Opcode.CONCAT, [half, half], [_big("ca", half), _big("cb", half)], axis=0)

    return {
        "concat 2^27 + 2^27 bytes, input 0": (cat, (1 << 27) - 1),
        "concat 2^27 + 2^27 bytes, input 1": (cat, (1 << 28) - 1),
        "slice int32 [2^26] [1, 2^26 - 1)": (lambda: _case(Opcode.SLICE, [TensorType(I32, (1 << 26,))],
                                                          [_big("sv", TensorType(I32, (1 << 26,)))], axis=0, start=1,
                                                          len=(1 << 26) - 2), (1 << 26) - 3),
        "topk k=50 row 16384, top at the end (2^28-byte tensor)": (lambda: topk_worst(0), 16383 * 50),
        "topk k=50 over 4096 pairs, top at the end": (lambda: topk_worst(1), 8191 * 50),
        "rope D=186368 (96 leaves)": (lambda: _case(Opcode.ROPE, [rx, rt], [_big("rx", rx), _big("rt", rt)], x_zp=1,
                                                    off=0, requant=req), r0 + rk),
        f"matmul K={k} int8 (B transposed)": (lambda: _case(Opcode.MATMUL, [ma, mb], [_big("x", ma), _big("w", mb)],
                                                            ta=0, tb=1, za=-5, zb=3, requant=req), 8190 * 4096 + 4095),
        "matmul B by column, 96 leaves": (lambda: _case(Opcode.MATMUL, [sa, sb], [_big("x", sa), _big("w", sb)],
                                                        ta=0, tb=0, za=-5, zb=3, requant=req),
                                          2 * 131072 * 1024 - 1),
        "lut [16384,16384]": (lambda: _case(Opcode.LUT, [big, TensorType(I8, (256,))], [_big("l", big),
                              _big("t", TensorType(I8, (256,)))]), big.count - 1),
        "mul [16384,16384]": (lambda: _case(Opcode.MUL, [big, big], [_big("a", big), _big("b", big)], za=1, zb=-2, requant=req),
                big.count - 1),
        "gather [131072,2048] (2^28-byte table)": (gather, ids.shape[1] * 2048 - 1),
        "layernorm row 16384 = MAX_STEP_ELEMENTS": (lambda: _case(
            Opcode.LAYERNORM, [srow, TensorType(I8, (16384,)), TensorType(I32, (16384,))],
            [_big("n", srow), _big("g", TensorType(I8, (16384,))), _big("b", TensorType(I32, (16384,)))], x_zp=1,
            rms=0, eps=1, requant=req), srow.count - 1),
        "softmax row 16384 = MAX_STEP_ELEMENTS": (lambda: _case(
            Opcode.SOFTMAX, [srow, TensorType(I32, (256,))], [_big("s", srow), exp_table(1 / 64)], causal=0, off=0),
            srow.count - 1),
    }


def fake(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def measure(verifier, probe, case: OpCase, e: int) -> tuple[int, int, int]:
    data = [np.ascontiguousarray(a).tobytes() for a in case.inputs]
    desc = case.desc
    ins = list(desc.inputs)
    ins[0] = SlotRef(SlotKind.OP_OUTPUT, X_SLOT, ins[0].type)  # x is an agreed earlier op output
    desc = dataclasses.replace(desc, inputs=tuple(ins))
    weights = list(data[1:]) + [fake(f"w{i}") for i in range(WEIGHTS - len(data) + 1)]
    job = JobInputs(weights, [fake(f"u{u}") for u in range(UNITS)])
    x_levels = merkle.tensor_levels(data[0])
    trace_roots = [fake(f"t{j}") for j in range(OPS)]
    trace_roots[X_SLOT] = x_levels[-1][0]
    trace_levels = merkle.roots_levels(trace_roots)
    x_src = SlotSource(data[0], x_levels, tuple(merkle.inclusion_proof(trace_levels, X_SLOT, merkle.roots_zero)))

    def source(i: int) -> SlotSource:
        return x_src if i == 0 else job.weight_source(i - 1)

    blob = encode_proofs(desc, e, source)
    reads = element_ranges(desc, e, lambda i, s, e_: data[i][s:e_])
    value = compute_element(desc, e, [data[r.input][r.start : r.end] for r in reads])
    w = desc.out.dtype.width
    leaf = bytearray(LEAF_BYTES)
    off = (e * w) % LEAF_BYTES
    leaf[off : off + w] = value.to_bytes(w, "little", signed=True)
    ctx = (fake("program"), job.inputs_root, trace_levels[-1][0], UNIT, UNITS, OP_INDEX, OPS, len(weights),
           e * w // LEAF_BYTES)
    fn = verifier.functions.verify(ctx, desc.encode(), e, bytes(leaf), blob)
    assert fn.call() is True, "the verifier must accept the reference value"
    exec_gas, ok = probe.functions.measure(verifier.address, ctx, desc.encode(), e, bytes(leaf), blob).call()
    assert ok is True
    return fn.estimate_gas(), exec_gas, len(blob) + len(desc.encode()) + LEAF_BYTES


def deploy(w3: Web3) -> tuple[object, object, int]:
    """Int8Verifier and GasProbe from forge artifacts built into a temporary FOUNDRY_OUT."""
    sources = ["contracts/src/dispute/Int8Verifier.sol", "contracts/test/verifier/GasProbe.sol"]
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, FOUNDRY_OUT=out, FOUNDRY_CACHE_PATH=str(Path(out) / "cache"))
        subprocess.run([str(ROOT / "node_modules/.bin/forge"), "build", "--quiet", *sources],  # noqa: S603
                       cwd=ROOT, env=env, check=True)
        docs = {n: json.loads((Path(out) / f"{n}.sol" / f"{n}.json").read_text()) for n in ("Int8Verifier", "GasProbe")}
    made = {}
    for name, doc in docs.items():
        c = w3.eth.contract(abi=doc["abi"], bytecode=doc["bytecode"]["object"])
        rcpt = w3.eth.wait_for_transaction_receipt(c.constructor().transact({"from": w3.eth.accounts[0]}))
        made[name] = (w3.eth.contract(address=rcpt.contractAddress, abi=doc["abi"]), rcpt.gasUsed)
    code = len(w3.eth.get_code(made["Int8Verifier"][0].address))
    return made["Int8Verifier"][0], made["GasProbe"][0], made["Int8Verifier"][1], code


def worst_table(rows: list[dict]) -> None:
    print(f"bounds: MAX_STEP_LEAVES {MAX_STEP_LEAVES}, MAX_STEP_ELEMENTS {MAX_STEP_ELEMENTS:,}, MAX_K {MAX_K:,}; "
          f"step = tx + {GAME_OVERHEAD:,} (game), goal {GOAL_WORST:,}")
    print(f"{'op (worst element)':34} {'leaves':>6} {'scan':>6} {'tx gas':>10} {'exec gas':>10} {'calldata B':>10} "
          f"{'step':>10}")
    for r in rows:
        step = r["tx_gas"] + GAME_OVERHEAD
        print(f"{r['op']:34} {r['leaves']:>6} {r['scanned']:>6,} {r['tx_gas']:>10,} {r['exec_gas']:>10,} "
              f"{r['calldata_bytes']:>10,} {step:>10,} {'ok' if step <= GOAL_WORST else 'OVER'}")


def main() -> int:
    as_json = "--json" in sys.argv
    worst = "--worst" in sys.argv
    rows = []
    with start_anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        verifier, probe, deploy_gas, code = deploy(w3)
        table = worst_cases() if worst else cases()
        only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
        keep = [n for i, n in enumerate(table) if only is None or only in n or (i == 0 and not worst)]
        for name, (made, e) in ((n, table[n]) for n in keep):
            case = made() if callable(made) else made
            check_descriptor(case.desc)  # a worst case must be valid: at the bounds, not beyond
            tx, ex, cd = measure(verifier, probe, case, e)
            leaves, scanned = step_reads(case.desc)
            rows.append({"op": name, "tx_gas": tx, "exec_gas": ex, "calldata_bytes": cd, "leaves": leaves,
                         "scanned": scanned})
            del case
    if worst:
        if as_json:
            print(json.dumps({"goal": GOAL_WORST, "game": GAME_OVERHEAD, "rows": rows}, indent=1))
        else:
            worst_table(rows)
        return 0 if all(r["tx_gas"] + GAME_OVERHEAD <= GOAL_WORST for r in rows) else 1
    base = rows[0]
    if as_json:
        print(json.dumps({"deploy_gas": deploy_gas, "code_bytes": code, "baseline": base["op"], "rows": rows}, indent=1))
        return 0
    print(f"Int8Verifier: deploy {deploy_gas:,} gas, runtime code {code:,} bytes (EIP-170 limit 24,576)")
    print(f"{'op (element)':36} {'tx gas':>10} {'exec gas':>10} {'calldata B':>11} {'tx/relu':>8} {'exec/relu':>9}")
    for r in rows:
        print(f"{r['op']:36} {r['tx_gas']:>10,} {r['exec_gas']:>10,} {r['calldata_bytes']:>11,} "
              f"{r['tx_gas'] / base['tx_gas']:>8.2f} {r['exec_gas'] / base['exec_gas']:>9.2f}")
    k1024 = [r["tx_gas"] for r in rows if r["op"].startswith("linear K=1024")]
    if k1024:
        print(f"linear K=1024 worst tx: {max(k1024):,} gas = {max(k1024) / GOAL_K1024:.2f} of the 1M goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
