"""Fixtures of the runtime tests.

`calls`: the calls of each fused kernel (kernels_cpu's entry points wrapped).

`cpu_kernels`: the test runs twice, once per CPU form of the executor's ops: "fused" (the numba
kernels of gpumesh.node.runtime.kernels_cpu, `force(True)`) and "torch" (the torch forms they
replace, `force(False)`). The switch is read when an op is prepared (an Executor built,
kernels.prepare_op / kernels.run_op called), so it is set before the test body runs, and reset to
the environment's choice (`force(None)`) after it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gpumesh.node.runtime import kernels_cpu
from tests.unit.runtime.kernels_cpu_cases import KERNELS


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


@pytest.fixture
def calls(monkeypatch):
    """Calls per fused kernel: kernels_cpu's entry points wrapped (the prepared ops look them up on
    every call, so the wrappers see every use)."""
    counts: Counter = Counter()
    for name in KERNELS:
        def counted(*args, _real=getattr(kernels_cpu, name), _name=name):
            counts[_name] += 1
            return _real(*args)
        monkeypatch.setattr(kernels_cpu, name, counted)
    yield counts
    kernels_cpu.force(None)
