"""The int8 prover's proofs blob (docs/protocol.md 5.7.3): encoded for random ops of every kind and
opened again, it yields exactly the reference's input bytes; every single-byte change, a cut or an
extra byte, and an unagreed slot are rejected (as Int8Verifier reverts). The contract itself is
compared with this opener on anvil in tests/integration/verifier."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.game import GameSnapshot, Phase, Side
from gpumesh.client.core.merkle import range_proof, tensor_levels
from gpumesh.client.core.ops.reference import element_ranges
from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.dispute.int8_prover import (
    Int8Prover,
    StepProofError,
    encode_proofs,
    open_proofs,
    sibling_count,
)
from gpumesh.node.dispute.strategy import AgreedTrace, UnitTrace
from gpumesh.node.runtime.randprog import random_case

sys.path.insert(0, str(Path(__file__).resolve().parent))
from placed import place  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _draw(data):
    return lambda lo, hi: data.draw(st.integers(lo, hi))


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name.lower())
@SETTINGS
@given(data=st.data())
def test_opened_chunks_are_the_reference_bytes(op, data):
    case = random_case(_draw(data), op, max_dim=5, max_k=1500)
    p = place(case, unit=data.draw(st.integers(0, 4)), num_units=5,
              trace_slot=data.draw(st.sampled_from([None, 0, 2])))
    e = data.draw(st.integers(0, p.desc.out.count - 1))
    blob = encode_proofs(p.desc, e, p.source)
    chunks = open_proofs(p.ctx, p.desc, e, blob)
    assert chunks == [p.data[r.input][r.start : r.end] for r in element_ranges(p.desc, e, p.read)]


@pytest.mark.parametrize("op", [Opcode.LINEAR, Opcode.MAXPOOL, Opcode.REQUANT, Opcode.ARGMAX, Opcode.CHUNKMAX,
                                Opcode.PAIRARGMAX, Opcode.CHUNKSUM, Opcode.SUMREQUANT, Opcode.MATMUL, Opcode.LUT,
                                Opcode.MUL, Opcode.GATHER, Opcode.SOFTMAX,
                                Opcode.LAYERNORM, Opcode.ROPE, Opcode.TOPK, Opcode.CONCAT, Opcode.SLICE],
                         ids=lambda o: o.name.lower())
@SETTINGS
@given(data=st.data())
def test_any_changed_byte_is_rejected(op, data):
    case = random_case(_draw(data), op, max_dim=4, max_k=300)
    p = place(case, trace_slot=data.draw(st.sampled_from([None, 1])))
    e = data.draw(st.integers(0, p.desc.out.count - 1))
    blob = encode_proofs(p.desc, e, p.source)
    if not blob:  # maxpool window wholly in the padding: nothing to prove
        assert open_proofs(p.ctx, p.desc, e, blob) == []
        return
    pos = data.draw(st.integers(0, len(blob) - 1))
    bad = bytearray(blob)
    bad[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(StepProofError):
        open_proofs(p.ctx, p.desc, e, bytes(bad))
    with pytest.raises(StepProofError):
        open_proofs(p.ctx, p.desc, e, blob[:-1])
    with pytest.raises(StepProofError):
        open_proofs(p.ctx, p.desc, e, blob + b"\x00")


def test_trace_slot_at_or_after_the_disputed_op_is_rejected():
    case = random_case(lambda lo, hi: lo, Opcode.RELU)
    p = place(case, trace_slot=2, op_index=3)
    blob = encode_proofs(p.desc, 0, p.source)
    open_proofs(p.ctx, p.desc, 0, blob)
    with pytest.raises(StepProofError, match="not before the disputed op"):
        open_proofs(dataclasses.replace(p.ctx, op_index=2), p.desc, 0, blob)


def test_weight_outside_the_program_is_rejected():
    case = random_case(lambda lo, hi: lo, Opcode.LINEAR)
    p = place(case, extra_weights=0)
    blob = encode_proofs(p.desc, 0, p.source)
    open_proofs(p.ctx, p.desc, 0, blob)
    with pytest.raises(StepProofError):
        open_proofs(dataclasses.replace(p.ctx, num_weights=1), p.desc, 0, blob)


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(0, 12), data=st.data())
def test_sibling_count_matches_the_range_proof(depth, data):
    first = data.draw(st.integers(0, (1 << depth) - 1))
    last = data.draw(st.integers(first + 1, 1 << depth))
    tensor = bytes(range(256)) * 4 * min(last + 1, 1 << depth)
    proof = range_proof(tensor, first, last, None if depth == 0 else _levels_of_depth(tensor, depth))
    assert sibling_count(depth, first, last - 1) == len(proof.siblings)


def _levels_of_depth(tensor: bytes, depth: int):
    levels = tensor_levels(tensor)
    assert len(levels) - 1 <= depth
    if len(levels) - 1 < depth:  # grow the tree to the wanted depth with zero leaves
        return tensor_levels(tensor + bytes((1 << depth) * 1024 - len(tensor)))
    return levels


def test_prover_uses_the_agreed_trace_and_preflights():
    """Int8Prover on a snapshot: op-output inputs come from the challenger's own trace with
    paths from AgreedTrace; the blob opens against the snapshot's context."""
    case = random_case(lambda lo, hi: (lo + hi) // 2, Opcode.LINEAR, max_dim=3, max_k=40)
    p = place(case, trace_slot=1, op_index=3, num_ops=6)
    own = UnitTrace(p.trace)
    agreed = AgreedTrace(own, lambda j: p.source(0).root_path if j == 1 else [])
    snap = GameSnapshot(game_id=1, phase=Phase.ONE_STEP, turn=Side.CHALLENGER, move_no=9, height=0, index=0,
                        count=1, node=b"", split_bits=4, unit_index=p.ctx.unit_index, op_index=3,
                        num_units=p.ctx.num_units, num_ops=6, num_weights=p.ctx.num_weights,
                        trace_root=p.ctx.trace_root, inputs_root=p.ctx.inputs_root)
    prover = Int8Prover(p.job)
    blob = prover.proofs(snap, p.desc.encode(), 0, agreed)
    assert blob == encode_proofs(p.desc, 0, p.source)
    assert prover.element_bytes(p.desc.encode()) == p.desc.out.dtype.width
    wrong = AgreedTrace(own, lambda j: [b"\x00" * 32] * 3)
    with pytest.raises(StepProofError):
        prover.proofs(snap, p.desc.encode(), 0, wrong)
