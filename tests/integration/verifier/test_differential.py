"""Differential tests: the Python scalar reference and descriptor validator against the deployed
Int8Verifier through eth_call on a real anvil. Hypothesis draws ops of every kind
(gpumesh.node.runtime.randprog: shapes, attributes, quantization parameters, edge values), places
them in a job (unit input / weights, or an agreed trace slot), and asks the contract about a random
element: the reference value is accepted, any other value rejected; a changed proof byte reverts;
a mutated descriptor reverts exactly when the Python validator rejects it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.merkle import range_proof
from gpumesh.client.core.ops.rules import check_descriptor
from gpumesh.client.core.ops.types import DType, Opcode, OpDescriptor, ReqMode, Requant, TensorType, attr_size
from gpumesh.node.dispute.int8_prover import StepContext, encode_proofs
from gpumesh.node.runtime.randprog import _case, exp_table, random_case

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "verifier"))
from placed import place  # noqa: E402

pytestmark = pytest.mark.integration

COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _draw(data):
    return lambda lo, hi: data.draw(st.integers(lo, hi))


def ctx_tuple(ctx: StepContext, leaf_index: int, program_root: bytes = b"\x11" * 32) -> tuple:
    return (program_root, ctx.inputs_root, ctx.trace_root, ctx.unit_index, ctx.num_units, ctx.op_index,
            ctx.num_ops, ctx.num_weights, leaf_index)


def leaf_with(element: int, dtype: DType, value: int, filler: bytes) -> tuple[bytes, int]:
    """A leaf holding `value` at `element`'s place (other bytes `filler`), and its leaf index."""
    off = element * dtype.width
    leaf = bytearray((filler * (LEAF_BYTES // len(filler) + 1))[:LEAF_BYTES])
    pos = off % LEAF_BYTES
    leaf[pos : pos + dtype.width] = value.to_bytes(dtype.width, "little", signed=True)
    return bytes(leaf), off // LEAF_BYTES


#: Random cases per transformer op (0x0F-0x12) in test_verifier_equals_reference; the issue-#13 run
#: used GPUMESH_TRANSFORMER_CASES=500 (docs/protocol.md 5.7.6).
TRANSFORMER_CASES = int(os.environ.get("GPUMESH_TRANSFORMER_CASES", "40"))
TRANSFORMER_OPS = (Opcode.MATMUL, Opcode.LUT, Opcode.MUL, Opcode.GATHER, Opcode.SOFTMAX, Opcode.LAYERNORM,
                   Opcode.ROPE, Opcode.TOPK, Opcode.CONCAT, Opcode.SLICE)


@pytest.mark.parametrize("op", [o for o in Opcode if o not in TRANSFORMER_OPS], ids=lambda o: o.name.lower())
@settings(max_examples=40, **COMMON)
@given(data=st.data())
def test_verifier_equals_reference(verifier, op, data):
    _verifier_equals_reference(verifier, op, data)


@pytest.mark.parametrize("op", TRANSFORMER_OPS, ids=lambda o: o.name.lower())
@settings(max_examples=TRANSFORMER_CASES, **COMMON)
@given(data=st.data())
def test_transformer_op_verifier_equals_reference(verifier, op, data):
    _verifier_equals_reference(verifier, op, data)


def _verifier_equals_reference(verifier, op, data):
    case = random_case(_draw(data), op, max_dim=5, max_k=1200)
    p = place(case, unit=data.draw(st.integers(0, 4)), num_units=5,
              trace_slot=data.draw(st.sampled_from([None, 0, 2])))
    desc = p.desc.encode()
    assert verifier.functions.outputBytes(desc).call() == p.desc.out.nbytes
    e = data.draw(st.integers(0, p.desc.out.count - 1))
    blob = encode_proofs(p.desc, e, p.source)
    ref = p.reference(e)
    dt = p.desc.out.dtype
    filler = data.draw(st.binary(min_size=1, max_size=8))
    leaf, li = leaf_with(e, dt, ref, filler)
    assert verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, blob).call() is True
    other = data.draw(st.integers(dt.lo, dt.hi).filter(lambda v: v != ref))
    leaf, li = leaf_with(e, dt, other, filler)
    assert verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, blob).call() is False


@settings(max_examples=40, **COMMON)
@given(data=st.data())
def test_changed_proof_byte_reverts(verifier, data):
    op = data.draw(st.sampled_from([Opcode.LINEAR, Opcode.ADD, Opcode.MAXPOOL, Opcode.ARGMAX, Opcode.TRANSPOSE,
                                     Opcode.CHUNKMAX, Opcode.PAIRARGMAX, Opcode.CHUNKSUM, Opcode.SUMREQUANT,
                                     *TRANSFORMER_OPS]))
    case = random_case(_draw(data), op, max_dim=4, max_k=300)
    p = place(case, trace_slot=data.draw(st.sampled_from([None, 1])))
    e = data.draw(st.integers(0, p.desc.out.count - 1))
    blob = encode_proofs(p.desc, e, p.source)
    if not blob:
        return  # a maxpool window wholly in the padding reads nothing
    leaf, li = leaf_with(e, p.desc.out.dtype, p.reference(e), b"\x00")
    bad = bytearray(blob)
    bad[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ContractLogicError):
        verifier.functions.verify(ctx_tuple(p.ctx, li), p.desc.encode(), e, leaf, bytes(bad)).call()


def python_accepts(desc: bytes) -> int | None:
    """Output bytes if the Python decoder + validator accept the descriptor, else None."""
    try:
        d = OpDescriptor.decode(desc)
        check_descriptor(d)
    except Exception:  # noqa: BLE001 - any rejection (ProgramError, struct/enum errors) counts
        return None
    return d.out.nbytes


@settings(max_examples=300, **COMMON)
@given(data=st.data())
def test_descriptor_validation_matches_python(verifier, data):
    op = data.draw(st.sampled_from(list(Opcode)))
    desc = bytearray(random_case(_draw(data), op, max_dim=4, max_k=64).desc.encode())
    attrs = attr_size(op)
    for _ in range(data.draw(st.integers(1, 3))):
        # half of the changes hit the attributes (small fields whose ranges the rules check)
        if attrs and data.draw(st.booleans()):
            pos = len(desc) - 1 - data.draw(st.integers(0, attrs - 1))
        else:
            pos = data.draw(st.integers(0, len(desc) - 1))
        desc[pos] = data.draw(st.sampled_from([0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, data.draw(st.integers(0, 255))]))
    if data.draw(st.integers(0, 9)) == 0:
        desc = desc[:-1] if data.draw(st.booleans()) else desc + b"\x00"
    want = python_accepts(bytes(desc))
    try:
        got = verifier.functions.validateDescriptor(bytes(desc)).call()
    except ContractLogicError:
        got = None
    assert got == want, f"descriptor {bytes(desc).hex()}: python {want}, solidity {got}"
    if want is not None:  # proveOp's light decoding agrees on every descriptor the validator accepts
        assert verifier.functions.outputBytes(bytes(desc)).call() == want
    event("accepted" if want is not None else "rejected")


def test_gather_table_range_follows_the_id(verifier):
    """Gather's blob holds the table range only for an id in [0, V) (5.7.3): a blob that opens a
    table byte for an out-of-range id, or omits it for an in-range id, is refused by the contract."""
    ids = np.array([3, 7], dtype=np.int32)  # V = 5: id 7 is out of range
    table = np.arange(15, dtype=np.int8).reshape(5, 3)
    case = _case(Opcode.GATHER, [TensorType(DType.INT32, (2,)), TensorType(DType.INT8, (5, 3))], [ids, table])
    p = place(case)
    desc = p.desc.encode()
    tab = p.source(1)
    extra = tab.root + b"".join(tab.root_path) + range_proof(tab.data, 0, 1, tab.levels).leaves
    extra += b"".join(range_proof(tab.data, 0, 1, tab.levels).siblings)
    for e, want in ((1, 10), (4, 0)):  # (id 3, column 1) = 3*3 + 1; (id 7, column 1) = 0
        blob = encode_proofs(p.desc, e, p.source)
        assert p.reference(e) == want
        leaf, li = leaf_with(e, DType.INT8, want, b"\x00")
        assert verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, blob).call() is True
        # out of range: a table range appended; in range: the table range (one leaf, as `extra`) cut
        bad = blob + extra if want == 0 else blob[: -len(extra)]
        with pytest.raises(ContractLogicError):
            verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, bad).call()


def every_element(verifier, p, dtype: DType) -> list[int]:
    """Every element of a placed case through eth_call: the reference value accepted, a neighbour
    (value - 1, or + 1 at the dtype's minimum) refused. The reference values, in order."""
    desc = p.desc.encode()
    got = []
    for e in range(p.desc.out.count):
        blob = encode_proofs(p.desc, e, p.source)
        ref = p.reference(e)
        got.append(ref)
        for v, want in ((ref, True), (ref - 1 if ref > dtype.lo else ref + 1, False)):
            leaf, li = leaf_with(e, dtype, v, b"\x00")
            assert verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, blob).call() is want
    return got


def _softmax_rows() -> np.ndarray:
    """Rows of 64: all -128, all 127, one 127 among -128s, all equal (3), a ramp."""
    rows = np.full((5, 64), -128, dtype=np.int8)
    rows[1] = 127
    rows[2, 9] = 127
    rows[3] = 3
    rows[4] = np.arange(64) * 4 - 128
    return rows


@pytest.mark.parametrize("causal", [0, 1])
def test_softmax_extremes_every_element(verifier, causal):
    """softmax's extremes through eth_call, every element (docs/protocol.md 2.2.1): the reference
    value is accepted and value + 1 (or - 1) refused; without the mask an equal row gives
    floor((512 + L) / (2L)) - 128 everywhere and the one huge logit takes all (127, the rest -128)."""
    x, t = TensorType(DType.INT8, (5, 64)), TensorType(DType.INT32, (256,))
    case = _case(Opcode.SOFTMAX, [x, t], [_softmax_rows(), exp_table(1 / 16)], causal=causal, off=0)
    y = np.array(every_element(verifier, place(case), DType.INT8)).reshape(5, 64)
    if not causal:
        for r in (0, 1, 3):
            assert (y[r] == (512 + 64) // 128 - 128).all()
        assert y[2, 9] == 127 and (np.delete(y[2], 9) == -128).all()
    else:  # row r: columns 0..r unmasked, the rest -128
        assert all((y[r, r + 1 :] == -128).all() for r in range(5))
        assert y[0, 0] == 127  # a single unmasked column holds probability 1


def test_softmax_row_of_4096(verifier):
    """One element's one-step over a row of 4,096 logits (4 leaves of row, 1 KiB table), through eth_call."""
    x, t = TensorType(DType.INT8, (2, 4096)), TensorType(DType.INT32, (256,))
    rng = np.random.default_rng(7)
    case = _case(Opcode.SOFTMAX, [x, t], [rng.integers(-128, 128, size=(2, 4096)).astype(np.int8),
                                          exp_table(1 / 32)], causal=1, off=4000)
    p = place(case)
    desc = p.desc.encode()
    for e in (0, 4095, 4096 + 4001, 4096 + 4002, 8191):
        blob = encode_proofs(p.desc, e, p.source)
        ref = p.reference(e)
        if e in (4095, 4096 + 4002, 8191):  # row r masks the columns above r + 4000
            assert ref == -128
        for v, want in ((ref, True), (ref - 1 if ref > -128 else ref + 1, False)):
            leaf, li = leaf_with(e, DType.INT8, v, b"\x00")
            assert verifier.functions.verify(ctx_tuple(p.ctx, li), desc, e, leaf, blob).call() is want


@pytest.mark.parametrize("x_zp", [-128, 127])
def test_rope_extremes_every_element(verifier, x_zp):
    """rope's extremes through eth_call, every element (docs/protocol.md 2.2.3): pairs at +-255
    against (cos, sin) entries of +-2^15 and beyond (clamped), at offsets 0 and 2 (up to the table's
    last row); the reference value is accepted and a neighbour refused."""
    x, t = TensorType(DType.INT8, (2, 4, 8)), TensorType(DType.INT32, (6, 4, 2))
    rows = np.array([[127] * 8, [-128] * 8, [127] * 4 + [-128] * 4, [-128] * 4 + [127] * 4] * 2).reshape(x.shape)
    table = np.array([(2**15, 2**15), (-(2**15), 2**15), (2**31 - 1, -(2**31)), (2**15 + 1, -(2**15) - 1),
                      (0, 2**15), (2**15, 0)], dtype=np.int32)[:, None, :].repeat(4, axis=1)
    for off in (0, 2):
        case = _case(Opcode.ROPE, [x, t], [rows.astype(np.int8), table], x_zp=x_zp, off=off,
                     requant=Requant(ReqMode.PER_TENSOR, 1, 17, 0, -128, 127))
        got = every_element(verifier, place(case), DType.INT8)
        # x_zp -128, row 0 (all 127: a = b = 255) at position 0 (c = s = 2^15): a c - b s = 0 and
        # b c + a s = 255 * 2^16, / 2^17 = 127.5 rounded half up, saturating at 127; x_zp 127, row 1
        # (all -128: a = b = -255) at position 1 (c = -2^15, s = 2^15): the halves swap roles
        if off == 0:
            e0, want = (0, [0, 127]) if x_zp == -128 else (8, [127, 0])
            assert [got[e0], got[e0 + 4]] == want


@pytest.mark.parametrize(("k", "q", "pairs"), [(64, 0, 0), (5, 0, 0), (7, 24, 0), (9, 0, 1), (4, 10, 1)])
def test_topk_extremes_every_element(verifier, k, q, pairs):
    """topk's extremes through eth_call, every element (docs/protocol.md 2.2.4): rows all -128, all
    127, one 127 among -128s, few distinct values (ties: lower index first), 64 values so that the
    word-wise second scan crosses a word; chunks with a short last chunk (padding pairs); pairs with
    int32 extremes (clamped). The reference value is accepted and a neighbour refused."""
    rows = np.full((4, 64), -128, dtype=np.int64)
    rows[1] = 127
    rows[2, 50] = 127
    rows[3] = np.arange(64) % 3 - 1
    if pairs:
        vals = rows.copy()  # int32 extremes and 200 clamp to the row's own 127 / -128: same order
        vals[rows == 127] = 2**31 - 1
        vals[1, ::2] = 200
        vals[0, ::3] = -(2**31)
        x = np.stack([vals, np.arange(256).reshape(4, 64) + 1000], axis=-1).astype(np.int32)
        t = TensorType(DType.INT32, x.shape)
    else:
        x, t = rows.astype(np.int8), TensorType(DType.INT8, rows.shape)
    got = every_element(verifier, place(_case(Opcode.TOPK, [t], [x], k=k, q=q, pairs=pairs)), DType.INT32)
    if (k, q, pairs) == (64, 0, 0):  # ties keep the index order; the one 127 comes first
        y = np.array(got).reshape(4, 64)
        assert y[0].tolist() == y[1].tolist() == list(range(64))
        assert y[2].tolist() == [50, *range(50), *range(51, 64)]
        assert y[3].tolist() == [*range(2, 64, 3), *range(1, 64, 3), *range(0, 64, 3)]
