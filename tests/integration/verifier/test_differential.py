"""Differential tests: the Python scalar reference and descriptor validator against the deployed
Int8Verifier through eth_call on a real anvil. Hypothesis draws ops of every kind
(gpumesh.node.runtime.randprog: shapes, attributes, quantization parameters, edge values), places
them in a job (unit input / weights, or an agreed trace slot), and asks the contract about a random
element: the reference value is accepted, any other value rejected; a changed proof byte reverts;
a mutated descriptor reverts exactly when the Python validator rejects it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.rules import check_descriptor
from gpumesh.client.core.ops.types import DType, Opcode, OpDescriptor, attr_size
from gpumesh.node.dispute.int8_prover import StepContext, encode_proofs
from gpumesh.node.runtime.randprog import random_case

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


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name.lower())
@settings(max_examples=40, **COMMON)
@given(data=st.data())
def test_verifier_equals_reference(verifier, op, data):
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
                                     Opcode.CHUNKMAX, Opcode.PAIRARGMAX, Opcode.CHUNKSUM, Opcode.SUMREQUANT]))
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
