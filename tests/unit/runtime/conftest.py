"""Fixtures of the runtime tests.

`cpu_kernels`: the test runs twice, once per CPU form of the executor's ops: "fused" (the numba
kernels of gpumesh.node.runtime.kernels_cpu, `force(True)`) and "torch" (the torch forms they
replace, `force(False)`). The switch is read when an op is prepared (an Executor built,
kernels.prepare_op / kernels.run_op called), so it is set before the test body runs, and reset to
the environment's choice (`force(None)`) after it.
"""

from __future__ import annotations

import pytest

from gpumesh.node.runtime import kernels_cpu


@pytest.fixture(params=["fused", "torch"])
def cpu_kernels(request):
    fused = request.param == "fused"
    kernels_cpu.force(fused)
    try:
        # numba is a dependency: a "fused" run that silently kept the torch forms would prove nothing
        assert kernels_cpu.enabled() == fused
        yield request.param
    finally:
        kernels_cpu.force(None)
