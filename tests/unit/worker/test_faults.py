"""The fault-injection executor (TEST TOOL) against the honest one: ops before the corrupted one are
identical, the corrupted op differs in exactly the chosen element (one flipped bit, FLIP), later ops see
the corrupted value, other units are untouched, and the trace agrees with the outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpumesh.client.core.errors import UsageError
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, load_units
from gpumesh.node.worker.faults import FLIP, Fault, FaultyExecutor, run_unit_at, trace_at

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cnn():
    b = load_program(REPO / "examples/digits/cnn")
    return b, load_units(REPO / "examples/digits/data/test_inputs_cnn.safetensors", b.program)[:3]


@pytest.mark.parametrize("op,element", [(0, 0), ("conv2", 1234), ("gap", -1), (-1, -1)])
def test_one_element_is_corrupted_and_propagates(cnn, op, element):
    bundle, units = cnn
    honest = Executor(bundle)
    faulty = FaultyExecutor(bundle, Fault(1, op, element))
    j, e = faulty.fault_op, faulty.fault_element
    h = honest.trace(units[1]).outputs
    f = trace_at(faulty, 1, units[1]).outputs
    assert f[:j] == h[:j]
    width = bundle.program.ops[j].desc.out.dtype.width
    diff = [i for i in range(0, len(h[j]), width) if h[j][i:i + width] != f[j][i:i + width]]
    assert diff == [e * width]
    a = int.from_bytes(h[j][e * width:(e + 1) * width], "little", signed=True)
    b = int.from_bytes(f[j][e * width:(e + 1) * width], "little", signed=True)
    assert a ^ b == FLIP
    # the outputs agree with the trace, and other units are honest
    assert np.ascontiguousarray(run_unit_at(faulty, 1, units[1])).tobytes() == f[-1]
    for u in (0, 2):
        assert trace_at(faulty, u, units[u]).outputs == honest.trace(units[u]).outputs


def test_parse_and_range_errors(cnn):
    bundle, _ = cnn
    assert Fault.parse("2:fc:-1") == Fault(2, "fc", -1)
    assert Fault.parse("0:3:17") == Fault(0, 3, 17)
    for bad in ("1:2", "a:1:1", "-1:0:0"):
        with pytest.raises(UsageError):
            Fault.parse(bad)
    with pytest.raises(UsageError, match="no op named"):
        Fault(0, "nope", 0).resolve(bundle)
    with pytest.raises(UsageError, match="out of range"):
        Fault(0, 99, 0).resolve(bundle)
    with pytest.raises(UsageError, match="element 32 out of range"):
        Fault(0, -1, 32).resolve(bundle)
