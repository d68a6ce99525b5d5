"""Descriptor byte layout (pinned by hand from docs/protocol.md section 3), round trips, validation errors
and the integer arithmetic checked against exact rational arithmetic."""

from __future__ import annotations

import json
import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.intmath import requant, round_shift, wrap32
from gpumesh.client.core.ops.reference import element_ranges
from gpumesh.client.core.ops.rules import (
    MAX_GATHER_ROWS,
    MAX_K,
    MAX_STEP_ELEMENTS,
    MAX_STEP_LEAVES,
    check_descriptor,
    range_leaves,
    step_reads,
)
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
from gpumesh.client.core.program import Program
from gpumesh.node.runtime.randprog import random_case

I8, I32 = DType.INT8, DType.INT32


def _linear() -> OpDescriptor:
    x, w, b, qp = TensorType(I8, (4, 3)), TensorType(I8, (5, 3)), TensorType(I32, (5,)), TensorType(I32, (5, 2))
    slots = (SlotRef(SlotKind.UNIT_INPUT, 0, x), SlotRef(SlotKind.WEIGHT, 0, w), SlotRef(SlotKind.WEIGHT, 1, b),
             SlotRef(SlotKind.WEIGHT, 2, qp))
    attrs = make_attrs(Opcode.LINEAR, x_zp=-2, requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 3, -128, 127))
    return OpDescriptor(Opcode.LINEAR, slots, TensorType(I8, (4, 5)), attrs)


def test_linear_descriptor_bytes_match_the_spec_layout():
    # written out field by field from docs/protocol.md 3.2-3.3, not produced by encode()
    def ttype(dt, dims):
        return bytes([dt, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims + [1] * (4 - len(dims)))

    want = bytes([0x01, 4])
    want += bytes([1]) + (0).to_bytes(4, "big") + ttype(1, [4, 3])
    want += bytes([0]) + (0).to_bytes(4, "big") + ttype(1, [5, 3])
    want += bytes([0]) + (1).to_bytes(4, "big") + ttype(2, [5])
    want += bytes([0]) + (2).to_bytes(4, "big") + ttype(2, [5, 2])
    want += ttype(1, [4, 5])
    want += bytes([0xFE, 2]) + (0).to_bytes(4, "big", signed=True) + bytes([0, 3, 0x80, 0x7F])
    d = _linear()
    assert d.encode() == want
    assert len(want) == 2 + 4 * 23 + 18 + 10
    assert OpDescriptor.decode(want) == d
    check_descriptor(d)


def test_decode_rejects_non_canonical_and_truncated_bytes():
    b = bytearray(_linear().encode())
    with pytest.raises(ProgramError, match="wrong length"):
        OpDescriptor.decode(bytes(b[:-1]))
    bad = bytearray(b)
    bad[2 + 5 + 2 + 4 * 3 + 3] = 2  # unused 4th dim of x set to 2
    with pytest.raises(ProgramError, match="non-canonical"):
        OpDescriptor.decode(bytes(bad))
    bad = bytearray(b)
    bad[0] = 0x7F
    with pytest.raises(ProgramError, match="unknown opcode"):
        OpDescriptor.decode(bytes(bad))


def _prog(ops, weights=None, inp=None) -> dict:
    return {"format": "gpumesh.program", "version": 1,
            "input": inp or {"name": "x", "dtype": "int8", "shape": [2, 4]},
            "weights": weights or [{"name": "w", "dtype": "int8", "shape": [3, 4]},
                                   {"name": "b", "dtype": "int32", "shape": [3]}],
            "ops": ops}


LIN = {"name": "fc", "op": "linear", "inputs": ["x", "w", "b"], "attrs": {"x_zp": 0}}


@pytest.mark.parametrize(("ops", "weights", "msg"), [
    ([{"name": "a", "op": "conv3d", "inputs": ["x"]}], None, "unknown op 'conv3d'"),
    ([{**LIN, "inputs": ["x", "w", "nope"]}], None, "'nope' is not the unit input"),
    ([{**LIN, "inputs": ["x", "w", "later"]}, {"name": "later", "op": "relu", "inputs": ["x"], "attrs": {"zp": 0}}],
     None, "'later' is not the unit input"),
    ([LIN], [{"name": "w", "dtype": "int8", "shape": [3, 5]}, {"name": "b", "dtype": "int32", "shape": [3]}],
     "but x has K = 4"),
    ([LIN], [{"name": "w", "dtype": "int8", "shape": [3, 4]}, {"name": "b", "dtype": "int8", "shape": [3]}],
     "bias must be int32"),
    ([{**LIN, "out": {"dtype": "int8", "shape": [2, 3]}}], None, "the rule gives"),
    ([{**LIN, "inputs": ["x", "w"]}], None, "takes 3 inputs"),
    ([{**LIN, "attrs": {"x_zp": 0, "requant": {"mode": "per_tensor", "mult": 5, "shift": 0, "lo": 0, "hi": 1}}}],
     None, "shift 0 outside"),
    ([{**LIN, "attrs": {"x_zp": 0, "requant": {"mode": "per_tensor", "mult": 5, "shift": 3, "lo": 9, "hi": 1}}}],
     None, "clamp"),
    ([{**LIN, "attrs": {"x_zp": 300}}], None, r"x_zp = 300 is outside \[-128, 127\]"),
    ([{"name": "r", "op": "relu", "inputs": ["x"], "attrs": {"zp": -129}}], None, r"zp = -129 is outside \[-128, 127\]"),
    ([{"name": "p", "op": "maxpool", "inputs": ["x"], "attrs": {"kh": 1, "kw": 1, "sh": 1, "sw": 1, "ph": 0, "pw": 0}}],
     None, r"int8 \[N,H,W,C\]"),
    ([{"name": "r", "op": "reshape", "inputs": ["x"], "out": {"dtype": "int8", "shape": [9]}}], None, "element count"),
    ([{"name": "t", "op": "transpose", "inputs": ["x"], "attrs": {"perm": [0, 0]}}], None, "canonical permutation"),
    ([{"name": "x", "op": "relu", "inputs": ["x"], "attrs": {"zp": 0}}], None, "used twice"),
    ([], None, "1..4096 ops"),
])
def test_validation_names_the_problem(ops, weights, msg):
    with pytest.raises(ProgramError, match=msg):
        Program.from_json(_prog(ops, weights))


def test_size_limit_and_k_limit():
    big = {"name": "x", "dtype": "int8", "shape": [1, 32769]}
    w = [{"name": "w", "dtype": "int8", "shape": [1, 32769]}, {"name": "b", "dtype": "int32", "shape": [1]}]
    with pytest.raises(ProgramError, match="above the limit 32768"):
        Program.from_json(_prog([LIN], w, big))
    at = {"name": "x", "dtype": "int8", "shape": [1, 32768]}
    Program.from_json(_prog([LIN], [{**w[0], "shape": [1, 32768]}, w[1]], at))
    huge = {"name": "x", "dtype": "int8", "shape": [1 << 14, 1 << 15]}
    with pytest.raises(ProgramError, match="above 2\\^28"):
        Program.from_json(_prog([{"name": "r", "op": "relu", "inputs": ["x"], "attrs": {"zp": 0}}], [], huge))


STEP_BOUNDS = Path(__file__).resolve().parents[2] / "vectors" / "step_bounds.json"


@pytest.mark.parametrize("case", json.loads(STEP_BOUNDS.read_text())["cases"], ids=lambda c: c["note"])
def test_step_bounds_vectors(case):
    """The shared vectors LibDescriptor is tested on (Int8Verifier.vectors.t.sol): at a bound the
    descriptor is accepted with its output size, just over it refused with one line naming the op
    and the limit (reason 8: MAX_K, 11: MAX_STEP_LEAVES / MAX_STEP_ELEMENTS)."""
    d = OpDescriptor.decode(bytes.fromhex(case["descriptor"][2:]))
    if case["reason"] == 0:
        check_descriptor(d)
        assert d.out.nbytes == case["outBytes"]
        leaves, scanned = step_reads(d)
        assert leaves <= MAX_STEP_LEAVES and scanned <= MAX_STEP_ELEMENTS
        return
    # reason 8: linear's or matmul's K above MAX_K, a chunk length outside [1, K], layernorm's
    # eps * D^3 above 2^61, rope's positions past its table or topk's k; 7: a gather table above
    # MAX_GATHER_ROWS, rope's odd D, concat's inputs; 8 also a view's axis or slice range
    limit = {7: f"(with V <= {MAX_GATHER_ROWS}|with D even|differ in dtype, rank or a dim other than axis)",
             8: f"(above the limit {MAX_K}|chunk length q = \\d+ outside \\[1, |eps \\* D\\^3 above 2\\^61"
                "|T \\+ off = \\d+ above the table's P|k = \\d+ outside|q = \\d+ and k = \\d+ outside"
                "|axis \\d+ outside rank|is not a non-empty range of axis)",
             11: "above the limit MAX_STEP_(LEAVES|ELEMENTS) = "}[case["reason"]]
    with pytest.raises(ProgramError, match=f"^{d.opcode.name.lower()}: .*{limit}") as e:
        check_descriptor(d)
    assert "\n" not in str(e.value)


def test_step_bounds_are_tight_and_count_what_the_reference_reads():
    """Each bound is reached by a valid descriptor, and for every element of small random ops the
    ranges of element_ranges open no more leaves (plus one per range for its siblings) than
    step_reads charges, and scan no more elements."""
    assert range_leaves(1) == 2 and range_leaves(1024) == 3 and range_leaves(1025) == 3 and range_leaves(1026) == 4
    rng = np.random.default_rng(7)
    chunked = (Opcode.CHUNKMAX, Opcode.PAIRARGMAX, Opcode.CHUNKSUM, Opcode.SUMREQUANT)
    for op in (Opcode.LINEAR, Opcode.MAXPOOL, Opcode.AVGPOOL, Opcode.ARGMAX, Opcode.REQUANT, Opcode.ADD, *chunked):
        for _ in range(20):
            case = random_case(lambda lo, hi: int(rng.integers(lo, hi + 1)), op, max_dim=6, max_k=3000)
            d = case.desc
            leaves, scanned = step_reads(d)
            for e in range(0, d.out.count, max(1, d.out.count // 7)):
                rs = element_ranges(d, e)
                opened = sum(-(-r.end // LEAF_BYTES) - r.start // LEAF_BYTES + 1 for r in rs)
                assert opened <= leaves, (d, e)
                if op == Opcode.MAXPOOL:
                    c = d.inputs[0].type.shape[3]
                    assert sum((r.end - r.start - 1) // c + 1 for r in rs) <= scanned
                elif op in (Opcode.AVGPOOL, Opcode.ARGMAX):
                    width = d.inputs[0].type.dtype.width
                    per = d.inputs[0].type.shape[3] if op == Opcode.AVGPOOL else 1
                    assert sum(r.end - r.start for r in rs) // (width * per) == scanned
                elif op in chunked:  # int32 elements of a pair count twice; chunksum strides by C
                    x = d.inputs[0].type
                    (r,) = rs
                    n = r.end - r.start
                    read = (n - 1) // x.shape[3] + 1 if op == Opcode.CHUNKSUM else 2 * n // 8 if x.shape[-1] == 2 and (
                        op == Opcode.PAIRARGMAX or d.attr("pairs")) else n // x.dtype.width
                    assert read <= scanned
                    assert read == scanned or op in (Opcode.CHUNKMAX, Opcode.CHUNKSUM)  # the last chunk may be short


def test_json_round_trip_keeps_the_root():
    p = Program.from_json(_prog([LIN, {"name": "am", "op": "argmax", "inputs": ["fc"]}]))
    q = Program.from_json(p.to_json())
    assert q == p and q.root() == p.root()
    assert p.output_type == TensorType(I32, (2,))


@given(st.integers(-(2**40), 2**40), st.integers(1, 62))
def test_round_shift_is_round_half_up(v, s):
    exact = Fraction(v, 2**s)
    assert round_shift(v, s) == math.floor(exact + Fraction(1, 2))


@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(1, 62))
@settings(max_examples=300)
def test_requant_fits_int64_and_matches_rational_rounding(acc, mult, shift):
    t = acc * mult + (1 << (shift - 1))
    assert -(2**63) <= t < 2**63  # the int64 claim of docs/protocol.md 2.1
    y = requant(acc, mult, shift, 0, -128, 127)
    want = max(-128, min(127, math.floor(Fraction(acc * mult, 2**shift) + Fraction(1, 2))))
    assert y == want


@given(st.integers(-(2**80), 2**80))
def test_wrap32_is_the_int32_congruent(v):
    w = wrap32(v)
    assert -(2**31) <= w < 2**31 and (v - w) % 2**32 == 0
    assert w == struct.unpack("<i", (v % 2**32).to_bytes(4, "little"))[0]
