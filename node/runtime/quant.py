"""Post-training quantization math for the export: symmetric per-channel int8 weights, symmetric
per-tensor int8 activations, and real multipliers as (mult, shift) of docs/protocol.md 2.1.

Pure numpy (no torch), used by gpumesh.node.runtime.export.
"""

from __future__ import annotations

import math

import numpy as np

MULT_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(mult, shift) with mult / 2^shift ~= real, mult in [2^30, 2^31) when the range allows, shift in
    [1, 62]. real must be >= 0."""
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"multiplier {real} must be finite and >= 0")
    if real == 0:
        return 0, 1
    e = math.floor(math.log2(real))
    shift = min(62, max(1, 30 - e))
    mult = round(real * (1 << shift))
    while mult > MULT_MAX and shift > 1:  # rounding pushed it over: one bit less precision
        shift -= 1
        mult = round(real * (1 << shift))
    if mult > MULT_MAX:
        raise ValueError(f"multiplier {real} too large for int32 with shift >= 1")
    return mult, shift


#: Shift the export prefers for requant multipliers m <= 1: every value of the pre-clamped requant
#: then stays in int32 (requant._int32_form), at any int8 zero point and bounds.
INT32_SHIFT = 23
#: ... as long as the multiplier keeps >= 11 bits (m >= 2^(10 - 23)): a relative error <= 2^-11, at
#: most 0.0625 of an output step at |y| = 128 (the int8 rounding itself is 0.5); smaller m keep the
#: 31-bit form.
INT32_MIN_MULT = 1 << 10


def requant_multipliers(reals: list[float]) -> tuple[list[int], int]:
    """Multipliers sharing one shift for a linear's or avgpool's requant: INT32_SHIFT when every
    nonzero real lies in [2^-13, 1] (the int32 form of the fast path), else the 31-bit form of
    common_shift_multipliers."""
    nonzero = [r for r in reals if r != 0]
    if nonzero and max(nonzero) <= 1 and min(nonzero) * (1 << INT32_SHIFT) >= INT32_MIN_MULT:
        return [round(r * (1 << INT32_SHIFT)) for r in reals], INT32_SHIFT
    return common_shift_multipliers(reals)


def add_multipliers(reals: list[float]) -> tuple[list[int], int]:
    """(ma, mb) over one shift for an add: the largest shift at which 128 * (ma + mb) + 2^(shift-1)
    stays below 2^31 (the executor's all-int32 add, kernels._add_int32) and no larger than the
    31-bit form's, as long as every nonzero multiplier keeps >= 11 bits; else the 31-bit form."""
    mults31, shift31 = common_shift_multipliers(reals)
    total = sum(reals)
    shift = shift31
    while shift > 1 and 128 * total * (1 << shift) + (1 << (shift - 1)) > (1 << 31) - 1 - 256:
        shift -= 1
    mults = [round(r * (1 << shift)) for r in reals]
    if 128 * sum(mults) + (1 << (shift - 1)) <= (1 << 31) - 1 and all(
            m >= INT32_MIN_MULT for m, r in zip(mults, reals, strict=True) if r != 0):
        return mults, shift
    return mults31, shift31


def common_shift_multipliers(reals: list[float]) -> tuple[list[int], int]:
    """Multipliers sharing one shift (add rescales both inputs over one shift)."""
    top = max(reals)
    _, shift = quantize_multiplier(top)
    mults = [round(r * (1 << shift)) for r in reals]
    while max(mults) > MULT_MAX and shift > 1:
        shift -= 1
        mults = [round(r * (1 << shift)) for r in reals]
    return mults, shift


def act_scale(maxabs: float) -> float:
    """Per-tensor symmetric activation scale: the calibrated max maps to 127."""
    return max(float(maxabs), 1e-8) / 127.0


def quantize_act(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(x / scale), -128, 127).astype(np.int8)


def quantize_weight_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [OC, ...] float -> (int8 in [-127, 127], per-channel scales [OC])."""
    flat = w.reshape(w.shape[0], -1)
    s = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(flat / s[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), s


def quantize_bias(b: np.ndarray, s_x: float, s_w: np.ndarray) -> np.ndarray:
    q = np.rint(b.astype(np.float64) / (s_x * s_w))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


def qp_table(reals: np.ndarray) -> np.ndarray:
    """int32 [C, 2] rows (mult, shift) for per-channel requant, one shift shared by every channel
    (requant_multipliers) so the executor can shift by a scalar."""
    mults, shift = requant_multipliers([float(r) for r in np.ravel(reals)])
    return np.array([[m, shift] for m in mults], dtype=np.int32).reshape(-1, 2)
