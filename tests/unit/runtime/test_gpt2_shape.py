"""examples/gpt2_shape (issue #14, scale): the hand-built GPT-2-shaped program. The tiny preset
(2 layers, d 64, 4 heads, context 32, vocabulary 512) validates, runs through the Executor with the
same bytes as the op-by-op trace, decodes its token bytes to the ids it was given, ends in the
argmax of its own last-position logits, and one element of every op kind is proven from
Merkle-opened bytes (trace.element_proof, the one-step's reads); the full GPT-2-small shape
validates (the one-step bounds included) with its LM head's top-k in chunk levels."""

from __future__ import annotations

import numpy as np
import pytest

from examples.gpt2_shape import build as gpt2
from gpumesh.client.core import merkle
from gpumesh.client.core.ops import compute_element
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import NP_DTYPE
from gpumesh.node.runtime.trace import element_proof

TINY = gpt2.PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny():
    b = gpt2.bundle(TINY)
    ex = Executor(b)
    units = gpt2.units(TINY, 2)
    return b, units, [ex.trace(u) for u in units], ex


def _out(b, tr, name: str) -> np.ndarray:
    j = next(j for j, o in enumerate(b.program.ops) if o.name == name)
    t = b.program.ops[j].desc.out
    return np.frombuffer(tr.outputs[j], dtype=NP_DTYPE[t.dtype]).reshape(t.shape)


def test_encode_ids_round_trips_every_id_range():
    ids = np.array([0, 1, 126, 127, 128, 32_384, 32_385, 50_256, 64_770, 64_896])
    b = gpt2.encode_ids(ids).astype(np.int64) + 128
    assert ((b >= 0) & (b <= 255)).all()
    assert (b @ np.array(gpt2.ID_WEIGHTS) == ids).all()
    with pytest.raises(ValueError):
        gpt2.encode_ids(np.array([64_897]))


def test_tiny_runs_and_predicts_the_argmax_of_its_last_logits(tiny):
    b, units, traces, ex = tiny
    ids = np.random.default_rng(gpt2.SEED + 1).integers(0, TINY.vocab, (2, TINY.ctx))
    for u, tr in enumerate(traces):
        assert (_out(b, tr, "ids") == ids[u]).all(), "the token linear decodes the unit's bytes"
        assert ex.run_unit(units[u]).tobytes() == tr.outputs[-1], "honest plan == per-op trace"
        logits = _out(b, tr, "logits")[0].astype(int)
        assert int(_out(b, tr, "next")[0, 0]) == int(np.argmax(logits)), "top-1 is the first maximal logit"
        assert (_out(b, tr, "hl")[0] == _out(b, tr, f"b{TINY.layers - 1}.y")[-1]).all(), "the last row, exactly"
        assert len(set(logits.tolist())) > 20, "random weights keep the logits spread"


def test_one_element_of_every_op_kind_is_proven_from_opened_bytes(tiny):
    b, units, traces, _ = tiny
    prog, tr = b.program, traces[1]
    roots = [merkle.tensor_root(np.ascontiguousarray(u).tobytes()) for u in units]
    seen = set()
    for j, op in enumerate(prog.ops):
        d = op.desc
        if d.opcode in seen:
            continue
        seen.add(d.opcode)
        e = d.out.count - 1  # the last element: for the softmax the whole causal row
        p = element_proof(b, tr, j, e, unit_input_roots=roots, unit_index=1)
        assert p.value == int(np.frombuffer(tr.outputs[j], dtype=NP_DTYPE[d.out.dtype])[e])
        chunks = []
        for o in p.openings:
            assert merkle.verify_range(o.slot_root, o.proof)
            off = o.proof.start * merkle.LEAF_BYTES
            chunks.append(o.proof.leaves[o.range.start - off : o.range.end - off])
        assert compute_element(d, e, chunks) == p.value, op.name
    names = {s.name.lower() for s in seen}
    assert names >= {"linear", "reshape", "gather", "add", "layernorm", "transpose", "matmul", "softmax", "lut",
                     "topk"}


def test_gpt2_small_shape_validates_with_a_chunked_lm_head():
    prog = from_json(gpt2.program_json(gpt2.PRESETS["small"]))
    assert len(prog.ops) == 5 + 12 * 22 + 5 + 3
    assert prog.ops[-1].desc.out.shape == (1, 1)
    tail = [(o.name, o.desc.opcode.name.lower(), o.desc.out.shape) for o in prog.ops[-3:]]
    assert tail == [("next.chunks0", "topk", (1, 7, 1, 2)), ("next.cand0", "reshape", (1, 7, 2)),
                    ("next", "topk", (1, 1))]
    assert sum(w.type.nbytes for w in prog.weights) > 120_000_000
