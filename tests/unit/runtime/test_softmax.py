"""Integer softmax (opcode 0x13, docs/protocol.md 2.2.1): the float64 division of the torch kernel
is the integer floor everywhere it can be used, and the op's closed forms on edge rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.reference import softmax_element
from gpumesh.client.core.ops.types import DType, Opcode, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.randprog import _case, exp_table

ONE = 1 << 15


@pytest.mark.parametrize("s", [ONE, ONE + 1, 3 * ONE - 1, 255 * ONE + 12_345, 4096 * ONE - 7, 16384 * ONE,
                               16383 * ONE + 32_767, 999_999_937])
def test_float64_quotient_is_the_integer_floor_for_every_e(s):
    e = torch.arange(0, ONE + 1, dtype=torch.int64)
    want = torch.div(512 * e + s, 2 * s, rounding_mode="floor").to(torch.int32)
    got = kernels.softmax_quotient(e.to(torch.float64), torch.tensor(float(s), dtype=torch.float64))
    assert torch.equal(got, want)


def _run(rows: np.ndarray, table: np.ndarray, causal: int = 0, off: int = 0) -> np.ndarray:
    case = _case(Opcode.SOFTMAX, [TensorType(DType.INT8, rows.shape), TensorType(DType.INT32, (256,))],
                 [rows.astype(np.int8), table.astype(np.int32)], causal=causal, off=off)
    ref = np.frombuffer(run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs]), dtype=np.int8)
    out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs]).numpy()
    assert out.tobytes() == ref.tobytes()
    return out.reshape(rows.shape)


@pytest.mark.parametrize("length", [1, 2, 3, 255, 256, 4096])
@pytest.mark.parametrize("value", [-128, 0, 127])
def test_equal_row_gives_the_rounded_uniform_probability(length, value):
    y = _run(np.full((1, length), value), exp_table(0.05))
    assert (y == min((512 + length) // (2 * length) - 128, 127)).all()


def test_one_huge_logit_takes_everything_and_the_table_is_clamped(cpu_kernels):
    rows = np.full((2, 100), -128)
    rows[:, 37] = 127
    y = _run(rows, exp_table(1 / 16))  # E[255] = 0: the others get exactly 0
    assert (y[:, 37] == 127).all() and (np.delete(y, 37, axis=1) == -128).all()
    # a table of junk: E[0] ignored (2^15), negatives as 0, above 2^15 as 2^15
    junk = np.full(256, -5)
    junk[0], junk[255] = -(2**31), 2**31 - 1
    y = _run(rows, junk)
    row = rows[0].tolist()
    assert y[0].tolist() == [softmax_element(row, junk.tolist(), j, 100) for j in range(100)]
    # distances 1..254 read -5 (e = 0), distance 255 reads 2^31 - 1 (e = 2^15): every e is 2^15
    assert (y == (512 + 100) // 200 - 128).all()


def test_causal_mask_and_offset(cpu_kernels):
    rows = np.tile(np.arange(8) * 30 - 100, (4, 1))
    y = _run(rows, exp_table(1 / 8), causal=1, off=1)
    for t in range(4):
        assert (y[t, t + 2 :] == -128).all() and (y[t, : t + 2] > -128).any()
    assert y[0, 0] < y[0, 1]  # two unmasked columns: the larger logit wins
    # a huge offset unmasks everything: the plain softmax
    assert np.array_equal(_run(rows, exp_table(1 / 8), causal=1, off=2**32 - 1), _run(rows, exp_table(1 / 8)))
