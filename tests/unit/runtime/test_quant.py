"""The export's requant multipliers (gpumesh.node.runtime.quant): the int32-friendly shift where the
multiplier keeps enough bits, the 31-bit form elsewhere, and the precision of both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.node.runtime import quant
from gpumesh.node.runtime import requant as rq


@pytest.mark.parametrize("real", [1.0, 0.5, 0.00174, 0.000331, 2.0**-13])
def test_requant_multipliers_take_the_int32_shift_in_range(real):
    (mult,), shift = quant.requant_multipliers([real])
    assert shift == quant.INT32_SHIFT
    assert mult >= quant.INT32_MIN_MULT
    assert abs(mult / 2**shift - real) <= 2.0 ** -(shift + 1)  # round to nearest
    assert abs(mult / 2**shift / real - 1) <= 2.0**-11
    # the executor's requant of such an op runs the all-int32 form
    req = rq.Requant(mult, shift, 0, -128, 127, torch.device("cpu"))
    assert req.i32 is not None


@pytest.mark.parametrize("reals", [[1.5], [0.01, 2.0**-14], [2.0**-20], [3.0, 0.1]])
def test_requant_multipliers_keep_31_bits_outside_it(reals):
    mults, shift = quant.requant_multipliers(reals)
    assert (mults, shift) == quant.common_shift_multipliers(reals)
    assert max(mults) >= 2**30  # the largest keeps 31 bits


def test_zero_channels_do_not_block_the_int32_shift():
    mults, shift = quant.requant_multipliers([0.0, 0.003, 0.0])
    assert shift == quant.INT32_SHIFT and mults[0] == mults[2] == 0


def test_qp_table_shares_one_shift():
    t = quant.qp_table(np.array([0.002, 0.001, 0.0005]))
    assert t.dtype == np.int32 and t.shape == (3, 2)
    assert set(t[:, 1].tolist()) == {quant.INT32_SHIFT}


def test_quantize_multiplier_rejects_negative_and_overflow():
    with pytest.raises(ValueError):
        quant.quantize_multiplier(-1.0)
    with pytest.raises(ValueError):
        quant.quantize_multiplier(float("nan"))
    assert quant.quantize_multiplier(0.0) == (0, 1)
