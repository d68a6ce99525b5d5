"""Integer LayerNorm / RMSNorm (opcode 0x14, docs/protocol.md 2.2.2): the torch isqrt is the floor
square root at the edges of its range, and the op is the float layer norm to within its rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.reference import layernorm_z
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, TensorType
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.randprog import _case


def test_isqrt64_is_the_floor_square_root_at_the_edges():
    roots = [0, 1, 2, 3, 2**15, 2**26 + 3, 2**31 - 1, 2**31]
    vals = sorted({max(0, r * r + d) for r in roots for d in (-1, 0, 1)} | {2**62 - 1, 2**53 + 1, 2**61 + 12_345})
    vals = [v for v in vals if v < 2**62]
    got = kernels.isqrt64(torch.tensor(vals, dtype=torch.int64)).tolist()
    assert got == [math.isqrt(v) for v in vals]


@pytest.mark.parametrize("rms", [0, 1])
def test_z_is_the_normalized_value_in_12_fractional_bits(rms):
    rng = np.random.default_rng(3)
    for dd in (16, 768, 8192):
        row = rng.integers(-128, 128, dd).tolist()
        v = np.array(row, dtype=np.float64) + 5  # x_zp = -5
        if not rms:
            v -= v.mean()
        want = v / np.sqrt((v * v).mean() + 2.0)  # eps = 2 in the squared input scale
        for k in (0, dd // 2, dd - 1):
            # within the rounding of rD and of z itself
            assert abs(layernorm_z(row, k, -5, rms, 2) / 4096 - want[k]) < 2e-3


def test_constant_row_with_eps_zero_gives_requant_of_beta_and_executor_equals_reference(cpu_kernels):
    x, g, b = TensorType(DType.INT8, (2, 8)), TensorType(DType.INT8, (8,)), TensorType(DType.INT32, (8,))
    beta = np.arange(8, dtype=np.int32) * 1000 - 3000
    case = _case(Opcode.LAYERNORM, [x, g, b], [np.full((2, 8), 7, np.int8), np.full(8, 127, np.int8), beta],
                 x_zp=0, rms=0, eps=0, requant=Requant(ReqMode.PER_TENSOR, 1, 4, 0, -128, 127))
    ref = run_op(case.desc, [np.ascontiguousarray(a).tobytes() for a in case.inputs])
    out = kernels.run_op(case.desc, [torch.from_numpy(np.array(a)) for a in case.inputs]).numpy()
    assert out.tobytes() == ref
    # sigma = 0: y = requant(beta) = clamp(floor((beta + 8) / 16), -128, 127)
    assert out[0].tolist() == [min(max((int(v) + 8) // 16, -128), 127) for v in beta]
