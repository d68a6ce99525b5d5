"""`gpumesh worker doctor`'s self-test: run the bundled digits MLP example (examples/digits/mlp on
its 17 test units) with the worker's executor on the chosen device and compare the result root
with the one recorded here. A different root on an unchanged example means this machine's
runtime (torch build, GPU, driver) does not compute the exact integer semantics, and the worker
would lose every dispute: it must not take jobs.

The recorded roots were checked independently of the torch executor: tests/unit/worker/
test_selftest.py recomputes the result root with the pure-Python scalar reference of every op
(gpumesh.client.core.ops.reference). Imported by the worker CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpumesh.client.core.program import inputs_root

#: The example and the roots it must give (docs/roles/worker.md, "doctor").
EXAMPLE_PROGRAM = "mlp"
EXAMPLE_INPUTS = "data/test_inputs_mlp.safetensors"
EXPECTED_PROGRAM_ROOT = bytes.fromhex("817183b02e592551e8c8c69a6915c534e448952d02c8ad7bdf9052a58a335a62")
EXPECTED_INPUTS_ROOT = bytes.fromhex("416259bfc73a33cb6fff137f66b756301e2e299b45fe4e79598019cdbef22e2c")
EXPECTED_RESULT_ROOT = bytes.fromhex("b7b39187999fbcd3b391c51882acac2e9585ca550bdaa55646faf75fd1b87a1f")


def default_examples_dir() -> Path:
    """examples/digits of the checkout gpumesh runs from (node/ sits beside examples/)."""
    import gpumesh.node

    return Path(gpumesh.node.__file__).resolve().parents[1] / "examples" / "digits"


@dataclass(frozen=True)
class SelfTest:
    ok: bool
    message: str
    device: str
    units: int
    seconds: float
    result_root: bytes | None

    def to_json(self) -> dict:
        return {"ok": self.ok, "message": self.message, "device": self.device, "units": self.units,
                "seconds": round(self.seconds, 3),
                "result_root": None if self.result_root is None else "0x" + self.result_root.hex(),
                "expected_result_root": "0x" + EXPECTED_RESULT_ROOT.hex()}


def runtime_info(device: str = "cpu") -> dict:
    """What the executor will use on `device`: torch's version, its int8 GEMM (torch._int_mm, else
    the exact float64 fallback), on CPU whether the fused numba kernels run (`GPUMESH_CPU_KERNELS=
    torch` turns them off) and on CUDA whether the fused Triton requant/add kernels run
    (`GPUMESH_NO_TRITON=1` turns them off)."""
    import os

    import torch

    from gpumesh.node.runtime import kernels

    refused = kernels._INT_MM_OK.get(device) is False  # tried (by the self-test) and failed
    info = {"torch": torch.__version__,
            "int8_gemm": "torch._int_mm" if hasattr(torch, "_int_mm") and not refused else "float64 fallback (exact)"}
    if device == "cpu":
        from gpumesh.node.runtime import kernels_cpu

        if kernels_cpu.numba is None:
            info["cpu_kernels"] = "torch (numba not installed)"
        elif not kernels_cpu.enabled() and kernels_cpu.BROKEN is not None:
            info["cpu_kernels"] = f"torch (the fused kernels failed their self-check: {kernels_cpu.BROKEN})"
        elif not kernels_cpu.enabled():
            info["cpu_kernels"] = f"torch ({kernels_cpu.ENV}={os.environ.get(kernels_cpu.ENV)})"
        else:
            info["cpu_kernels"] = f"fused (numba {kernels_cpu.numba.__version__})"
    if device == "cuda":
        from gpumesh.node.runtime import gpu_requant

        if gpu_requant.triton is None:
            info["triton"] = "not installed (torch requant/add)"
        elif not gpu_requant.available():
            info["triton"] = f"off (GPUMESH_NO_TRITON={os.environ.get('GPUMESH_NO_TRITON')})"
        else:
            info["triton"] = f"yes ({gpu_requant.triton.__version__})"
    return info


def self_test(device: str = "cpu", examples: Path | None = None) -> SelfTest:
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, load_units

    root = Path(examples) if examples else default_examples_dir()
    prog_dir, inputs = root / EXAMPLE_PROGRAM, root / EXAMPLE_INPUTS
    if not (prog_dir / "program.json").is_file() or not inputs.is_file():
        return SelfTest(False, f"example not found under {root} (pass --examples DIR)", device, 0, 0.0, None)
    bundle = load_program(prog_dir)
    units = load_units(inputs, bundle.program)
    if bundle.program.root() != EXPECTED_PROGRAM_ROOT or inputs_root(
            bundle.program, bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in units]) != EXPECTED_INPUTS_ROOT:
        return SelfTest(False, f"the example under {root} is not the one the expected root was recorded for "
                        "(re-exported?)", device, len(units), 0.0, None)
    t0 = time.perf_counter()
    res = Executor(bundle, device).run(units)
    dt = time.perf_counter() - t0
    if res.result_root != EXPECTED_RESULT_ROOT:
        return SelfTest(False, f"WRONG result root on {device}: this runtime is not bit-exact; do not run jobs",
                        device, len(units), dt, res.result_root)
    return SelfTest(True, f"digits MLP, {len(units)} units: result root matches on {device}", device,
                    len(units), dt, res.result_root)
