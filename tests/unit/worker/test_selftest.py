"""The doctor's recorded roots are right, by a second implementation: the result root recomputed
with the pure-Python scalar reference of every op (no torch), the program and inputs roots from
the pure core. Then the self-test passes on this machine's CPU, and fails on a changed example."""

from __future__ import annotations

import shutil

import numpy as np

from gpumesh.client.core import merkle
from gpumesh.client.core.ops import reference
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.node.runtime.files import load_program, load_units, save_units
from gpumesh.node.worker import selftest


def test_recorded_result_root_matches_the_scalar_reference():
    root = selftest.default_examples_dir()
    b = load_program(root / selftest.EXAMPLE_PROGRAM)
    units = load_units(root / selftest.EXAMPLE_INPUTS, b.program)
    assert b.program.root() == selftest.EXPECTED_PROGRAM_ROOT
    unit_roots = []
    for u in units:
        outs: list[bytes] = []
        for op in b.program.ops:
            d = op.desc
            ins = [b.weight_bytes[b.program.weights[s.index].name] if s.kind == SlotKind.WEIGHT
                   else np.ascontiguousarray(u).tobytes() if s.kind == SlotKind.UNIT_INPUT else outs[s.index]
                   for s in d.inputs]
            outs.append(reference.run_op(d, ins))
        unit_roots.append(merkle.tensor_root(outs[-1]))
    assert merkle.roots_root(unit_roots) == selftest.EXPECTED_RESULT_ROOT


def test_self_test_passes_on_cpu_and_notices_a_changed_example(tmp_path):
    r = selftest.self_test("cpu")
    assert r.ok and r.units == 17 and r.result_root == selftest.EXPECTED_RESULT_ROOT
    src = selftest.default_examples_dir()
    shutil.copytree(src / "mlp", tmp_path / "mlp")
    (tmp_path / "data").mkdir()
    units = load_units(src / selftest.EXAMPLE_INPUTS, load_program(src / "mlp").program)
    save_units(tmp_path / selftest.EXAMPLE_INPUTS, units[:5])
    r = selftest.self_test("cpu", tmp_path)
    assert not r.ok and "not the one the expected root was recorded for" in r.message
    assert not selftest.self_test("cpu", tmp_path / "nowhere").ok


def test_runtime_info_names_the_gemm_and_the_triton_state(monkeypatch):
    import types

    from gpumesh.node.runtime import gpu_requant, kernels
    from gpumesh.node.worker.selftest import runtime_info

    info = runtime_info("cpu")
    assert info["torch"] and "triton" not in info
    monkeypatch.setitem(kernels._INT_MM_OK, "cpu", False)
    assert runtime_info("cpu")["int8_gemm"] == "float64 fallback (exact)"
    monkeypatch.setattr(gpu_requant, "triton", None)
    assert runtime_info("cuda")["triton"].startswith("not installed")
    monkeypatch.setattr(gpu_requant, "triton", types.SimpleNamespace(__version__="9.9"))
    monkeypatch.delenv("GPUMESH_NO_TRITON", raising=False)
    assert runtime_info("cuda")["triton"] == "yes (9.9)"
    monkeypatch.setenv("GPUMESH_NO_TRITON", "1")
    assert runtime_info("cuda")["triton"] == "off (GPUMESH_NO_TRITON=1)"


def test_runtime_info_names_the_cpu_kernels(monkeypatch):
    from gpumesh.node.runtime import kernels_cpu
    from gpumesh.node.worker.selftest import runtime_info

    monkeypatch.delenv("GPUMESH_CPU_KERNELS", raising=False)
    assert runtime_info("cpu")["cpu_kernels"] == f"fused (numba {kernels_cpu.numba.__version__})"
    assert "cpu_kernels" not in runtime_info("cuda")
    monkeypatch.setenv("GPUMESH_CPU_KERNELS", "torch")
    assert runtime_info("cpu")["cpu_kernels"] == "torch (GPUMESH_CPU_KERNELS=torch)"
    monkeypatch.delenv("GPUMESH_CPU_KERNELS")
    monkeypatch.setattr(kernels_cpu, "BROKEN", "ArithmeticError: add_i32 differs from the integer formula")
    assert runtime_info("cpu")["cpu_kernels"] == ("torch (the fused kernels failed their self-check: "
                                                  "ArithmeticError: add_i32 differs from the integer formula)")
    monkeypatch.setattr(kernels_cpu, "numba", None)
    assert runtime_info("cpu")["cpu_kernels"] == "torch (numba not installed)"
