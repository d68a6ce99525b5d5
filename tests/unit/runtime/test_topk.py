"""Top-k over a vocabulary (opcode 0x16, docs/protocol.md 2.2.4): the k best indices by value
descending, then index ascending; the chunked form (per chunk its k best (value, index) pairs, then
a top-k over the candidate pairs) equals the plain one, ties included, at one and two levels;
executor == reference on each; closed forms on tied rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.types import DType, Opcode, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.randprog import _case

I8, I32 = DType.INT8, DType.INT32


def _run(x: np.ndarray, k: int, q: int = 0, pairs: int = 0) -> np.ndarray:
    case = _case(Opcode.TOPK, [TensorType(I32 if pairs else I8, x.shape)], [x.astype(np.int32 if pairs else np.int8)],
                 k=k, q=q, pairs=pairs)
    ref = run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs])
    out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs]).numpy()
    assert out.tobytes() == ref
    return out


def _want(row: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda p: (-int(row[p]), p))[:k]


def test_ties_go_to_the_lower_index_and_k_equal_l_is_the_whole_order():
    row = np.array([3, -1, 3, 7, -1, 3, 7, 7, 0, -128, 127, 3])
    assert _run(row[None], 12)[0].tolist() == [10, 3, 6, 7, 0, 2, 5, 11, 8, 1, 4, 9]
    for v in (-128, 0, 127):  # a constant row: the indices in order
        assert _run(np.full((2, 9), v), 5).tolist() == [[0, 1, 2, 3, 4]] * 2


def test_chunk_pairs_and_padding():
    row = np.array([[5, 9, 1, 9, 2, 7, 7]])
    y = _run(row, 3, q=3)  # chunks [5 9 1] [9 2 7] [7]: the last shorter than k
    assert y.tolist() == [[[[9, 1], [5, 0], [1, 2]], [[9, 3], [7, 5], [2, 4]], [[7, 6], [-128, -1], [-128, -1]]]]
    # pairs: values clamped to int8, ties by position, the carried index out
    pairs = np.array([[2**31 - 1, 5], [127, 6], [-(2**31), 7], [200, 9]])
    assert _run(pairs, 4, pairs=1).tolist() == [5, 6, 9, 7]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_chunked_topk_equals_topk(data):
    """topk(pairs)(topk(x, q)) == topk(x) for any q >= k, and with a second level of pairs."""
    n = data.draw(st.integers(1, 300))
    k = data.draw(st.integers(1, min(n, 20)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    hi = data.draw(st.sampled_from([-127, -120, 0, 127]))  # few distinct values: many ties
    x = rng.integers(-128, hi + 1, (2, n))
    want = _run(x, k)
    assert want.tolist() == [_want(r, k) for r in x]
    q = data.draw(st.integers(k, n))
    cand = _run(x, k, q=q)  # [2, G, k, 2]
    flat = cand.reshape(2, -1, 2)
    assert np.array_equal(_run(flat, k, pairs=1), want)
    q2 = data.draw(st.integers(k, flat.shape[1]))
    second = _run(flat, k, q=q2, pairs=1).reshape(2, -1, 2)
    assert np.array_equal(_run(second, k, pairs=1), want)


@pytest.mark.parametrize("n", [50257, 131072])
def test_vocabulary_rows_through_the_chunked_form(n):
    """The export's shape for a vocabulary: chunks of 16,384 values, then the top-k of the pairs."""
    rng = np.random.default_rng(n)
    x = rng.integers(-128, 128, (1, n))
    x[0, [17, 40000 % n, n - 1]] = 127  # ties at the top
    want = _want(x[0], 10)  # over the one-step bounds as one op: only the chunked form is valid
    cand = _run(x, 10, q=16384).reshape(1, -1, 2)
    assert _run(cand, 10, pairs=1)[0].tolist() == want


@pytest.mark.parametrize(("v", "k", "levels"), [(4096, 50, 0), (50257, 10, 1), (131072, 50, 1), (131072, 1000, 2)])
def test_lowered_topk_program_runs_and_equals_the_order(tmp_path, v, k, levels):
    """lower_topk.topk_ops: one op within the bounds, else chunk levels (each op's step within the
    bounds) and a final top-k of the pairs; run by the Executor over stacked units."""
    from gpumesh.client.core.ops.rules import check_descriptor
    from gpumesh.client.core.program import from_json
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, save_program
    from gpumesh.node.runtime.lower_topk import topk_ops

    ops = topk_ops("top", "x", TensorType(I8, (2, v)), k)
    assert [o["op"] for o in ops].count("topk") == levels + 1
    prog = from_json({"format": "gpumesh.program", "version": 1,
                      "input": {"name": "x", "dtype": "int8", "shape": [2, v]}, "weights": [], "ops": ops})
    for op in prog.ops:
        check_descriptor(op.desc)
    save_program(tmp_path, prog, {})
    rng = np.random.default_rng(v + k)
    units = rng.integers(-128, 128, (3, 2, v)).astype(np.int8)
    units[1, 0, :] = 7  # a constant row: indices 0..k-1
    got = Executor(load_program(tmp_path)).run_units(units)
    for u in range(3):
        assert got[u].tolist() == [_want(r, k) for r in units[u]]
