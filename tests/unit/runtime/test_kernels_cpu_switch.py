"""The CPU kernel switch (GPUMESH_CPU_KERNELS=torch, `force`) read when an Executor is built, an
Executor's trace under each form against the reference, _np_vec's int32 check, and Hypothesis over
random layernorm and softmax cases, fused against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.intmath import INT32_MAX, INT32_MIN
from gpumesh.client.core.ops.types import Opcode, ReqMode, Requant, TensorType
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime import kernels_cpu
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, save_program
from gpumesh.node.runtime.randprog import _case, exp_table, random_case
from tests.unit.runtime.kernels_cpu_cases import (
    CPU,
    I8,
    I32,
    KERNELS,
    both,
    forced,
    ln_taken,
    ref_bytes,
)


def test_the_switch(monkeypatch):
    """GPUMESH_CPU_KERNELS=torch (any case, spaces) turns the kernels off; force overrides the
    environment either way; force(None) gives the environment's choice back."""
    try:
        monkeypatch.delenv(kernels_cpu.ENV, raising=False)
        kernels_cpu.force(None)
        assert kernels_cpu.enabled()
        for value, on in (("torch", False), (" Torch ", False), ("numba", True), ("", True)):
            monkeypatch.setenv(kernels_cpu.ENV, value)
            assert kernels_cpu.enabled() == on, value
        monkeypatch.setenv(kernels_cpu.ENV, "torch")
        kernels_cpu.force(True)
        assert kernels_cpu.enabled()
        kernels_cpu.force(None)
        assert not kernels_cpu.enabled()
        monkeypatch.delenv(kernels_cpu.ENV)
        kernels_cpu.force(False)
        assert not kernels_cpu.enabled()
        assert not rq.Requant(1, 4, 0, -128, 127, CPU).jit
    finally:
        kernels_cpu.force(None)


T, D = 16, 8  # q.k^T and P.V: 16 rows (the GEMM branch); k^T.q: D = 8 rows (matmul_small)


def _req(mult: int, shift: int, zp: int = 0, lo: int = -128, hi: int = 127) -> dict:
    return {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": zp, "lo": lo, "hi": hi}


def _op(name, op, inputs, dtype, shape, **attrs):
    return {"name": name, "op": op, "inputs": inputs, "out": {"dtype": dtype, "shape": shape}, "attrs": attrs}


def _attention_program():
    """An attention block that reaches every fused kernel: layernorm (f53), linears, q.k^T, a causal
    softmax, P.V to int32, a per-channel requant, an add in its int32 form, k^T.q, a mul."""
    w = [{"name": "g", "dtype": "int8", "shape": [D]}, {"name": "be", "dtype": "int32", "shape": [D]},
         {"name": "tab", "dtype": "int32", "shape": [256]}, {"name": "qp", "dtype": "int32", "shape": [D, 2]}]
    w += [{"name": f"w{n}", "dtype": "int8", "shape": [D, D]} for n in "qkv"]
    w += [{"name": f"b{n}", "dtype": "int32", "shape": [D]} for n in "qkv"]
    ops = [_op("ln", "layernorm", ["x", "g", "be"], "int8", [T, D], x_zp=1, rms=0, eps=1,
               requant=_req(1896750708, 45))]
    ops += [_op(n, "linear", ["ln", f"w{n}", f"b{n}"], "int8", [T, D], x_zp=0, requant=_req(1 << 9, 16, 2, -120, 120))
            for n in "qkv"]
    ops += [_op("s", "matmul", ["q", "k"], "int8", [T, T], ta=0, tb=1, za=3, zb=-2, requant=_req(1 << 9, 20, 1)),
            _op("p", "softmax", ["s", "tab"], "int8", [T, T], causal=1, off=0),
            _op("o32", "matmul", ["p", "v"], "int32", [T, D], ta=0, tb=0, za=-128, zb=0, requant={"mode": "none"}),
            _op("o", "requant", ["o32", "qp"], "int8", [T, D],
                requant={"mode": "per_channel", "mult": 0, "shift": 0, "zp": -3, "lo": -128, "hi": 127}),
            _op("r", "add", ["o", "ln"], "int8", [T, D], za=0, zb=1, ma=1 << 19, mb=3 << 18, shift=20, zy=-2,
                lo=-120, hi=120),
            _op("kq", "matmul", ["k", "q"], "int8", [D, D], ta=1, tb=0, za=-5, zb=7, requant=_req(1 << 9, 20, 1)),
            _op("y", "mul", ["r", "r"], "int8", [T, D], za=-1, zb=4, requant=_req(1 << 13, 20, -3))]
    return from_json({"format": "gpumesh.program", "version": 1,
                      "input": {"name": "x", "dtype": "int8", "shape": [T, D]}, "weights": w, "ops": ops})


def _weights(rng) -> dict[str, np.ndarray]:
    out = {"g": rng.integers(-128, 128, D).astype(np.int8), "be": rng.integers(-(1 << 20), 1 << 20, D).astype(np.int32),
           "tab": exp_table(1 / 16),
           "qp": np.stack([rng.integers(1 << 4, 1 << 8, D), rng.integers(14, 18, D)], axis=1).astype(np.int32)}
    for n in "qkv":
        out[f"w{n}"] = rng.integers(-128, 128, (D, D)).astype(np.int8)
        out[f"b{n}"] = rng.integers(-(1 << 16), 1 << 16, D).astype(np.int32)
    return out


def _reference_chain(prog, weights: dict, unit: np.ndarray) -> list[bytes]:
    from gpumesh.client.core.ops.types import SlotKind

    outs: list[bytes] = []
    for op in prog.ops:
        ins = [np.ascontiguousarray(weights[prog.weights[s.index].name]).tobytes() if s.kind == SlotKind.WEIGHT
               else unit.tobytes() if s.kind == SlotKind.UNIT_INPUT else outs[s.index] for s in op.desc.inputs]
        outs.append(run_op(op.desc, ins))
    return outs


def test_an_executor_keeps_the_form_it_was_built_with(tmp_path, calls, monkeypatch):
    """Executors built under force(True), force(False) and GPUMESH_CPU_KERNELS=torch: the first
    calls each of the four kernels, the others none, even with the switch flipped after the build
    (the form is chosen when the ops are prepared); all three give the reference's op outputs, the
    same trace root, streamed roots and stacked-run outputs."""
    rng = np.random.default_rng(5)
    prog = _attention_program()
    weights = _weights(rng)
    save_program(tmp_path, prog, weights)
    bundle = load_program(tmp_path)
    units = rng.integers(-128, 128, (3, T, D)).astype(np.int8)
    units[1, :4] = -128
    ref = _reference_chain(prog, weights, units[0])
    assert len(set(ref[-1])) > 4  # the output is not saturated to a constant
    seen = {}
    try:
        for name, on in (("fused", True), ("torch", False), ("env", None)):
            if name == "env":
                monkeypatch.setenv(kernels_cpu.ENV, "torch")
            kernels_cpu.force(on)
            ex = Executor(bundle)
            kernels_cpu.force(name != "fused")  # flipped: the prepared ops keep their form
            calls.clear()
            tr = ex.trace(units[0])
            streamed = ex.trace_roots(units[0])
            out = ex.run_units(units)
            used = dict(calls)
            kernels_cpu.force(None)
            if name == "fused":
                assert all(used.get(k, 0) > 0 for k in KERNELS if k != "lut16"), used  # (no lut in the chain)
            else:
                assert not used, (name, used)
            assert list(tr.outputs) == ref, name
            assert streamed == list(tr.roots), name
            seen[name] = (tr.trace_root, np.ascontiguousarray(out).tobytes())
    finally:
        kernels_cpu.force(None)
    assert seen["fused"] == seen["torch"] == seen["env"]


# ---------------------------------------------------------------------------------------------
# 6. _np_vec


def test_np_vec_refuses_a_parameter_outside_int32():
    assert rq._np_vec(5, 3).tolist() == [5, 5, 5] and rq._np_vec(5, 3).dtype == np.int32
    assert rq._np_vec(torch.tensor(-7), 2).tolist() == [-7, -7]
    assert rq._np_vec([INT32_MIN, INT32_MAX], 2).tolist() == [INT32_MIN, INT32_MAX]
    for bad in (INT32_MAX + 1, INT32_MIN - 1, [0, 1 << 31], torch.tensor([1, INT32_MIN - 1], dtype=torch.int64)):
        with pytest.raises(ValueError, match="outside int32"):
            rq._np_vec(bad, 2)
    with pytest.raises(ValueError):
        rq._np_vec([1, 2, 3], 2)  # not one entry per channel


# ---------------------------------------------------------------------------------------------
# 7. Hypothesis: random layernorm and softmax cases


@pytest.mark.parametrize("op", [Opcode.LAYERNORM, Opcode.SOFTMAX], ids=lambda o: o.name.lower())
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cases_fused_equal_the_reference(op, data, calls):
    case = random_case(lambda lo, hi: data.draw(st.integers(lo, hi)), op, max_dim=8)
    taken = ln_taken(case) if op == Opcode.LAYERNORM else True
    got, _ = both(case, calls, op.name.lower(), taken)
    assert got == run_op(case.desc, ref_bytes(case))


@pytest.mark.parametrize("shape", [(256,), (8, 16, 64), (2, 3, 5), (1,)], ids=["all_bytes", "even", "odd", "one"])
def test_lut_through_the_pair_table(shape, calls):
    """The lut (every int8 value where the shape holds 256) through kernels_cpu.lut16's pair table
    and through the torch forms, equal to the reference; an odd element count keeps the byte table
    (no lut16 call)."""
    rng = np.random.default_rng(len(shape))
    n = int(np.prod(shape))
    x = (np.arange(-128, 128) if n == 256 else rng.integers(-128, 128, n)).astype(np.int8).reshape(shape)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    case = _case(Opcode.LUT, [TensorType(I8, shape), TensorType(I8, (256,))], [x, table])
    got, used = both(case, calls, "lut16", n % 2 == 0)
    assert got == run_op(case.desc, ref_bytes(case))
    assert np.frombuffer(got, np.int8).tolist() == [int(table[int(v) + 128]) for v in x.reshape(-1)]


def test_a_failed_self_check_turns_the_kernels_off(monkeypatch, caplog):
    """A numba or LLVM that cannot compile or run the kernels here, or gets a bit wrong: the first
    enabled() runs the self-check, which fails, logs one warning and turns the kernels off for the
    process (BROKEN says why); ops prepared then take the torch forms, whose bits are the same."""
    def wrong():
        raise ArithmeticError("requant_i32 differs from the integer formula")
    monkeypatch.setattr(kernels_cpu, "_check_kernels", wrong)
    monkeypatch.setattr(kernels_cpu, "_CHECKED", False)
    monkeypatch.setattr(kernels_cpu, "BROKEN", None)
    with caplog.at_level("WARNING", logger="gpumesh.kernels"):
        assert not kernels_cpu.enabled()
        assert not kernels_cpu.enabled()  # checked once: one warning
    assert kernels_cpu.BROKEN == "ArithmeticError: requant_i32 differs from the integer formula"
    assert [r.getMessage() for r in caplog.records] == [
        "fused CPU kernels off (ArithmeticError: requant_i32 differs from the integer formula): "
        "the executor uses the torch forms (same bits, slower)"]
    with forced(True):  # force cannot turn on kernels that failed
        assert not kernels_cpu.enabled()
        r = rq.requant_of(_case(Opcode.REQUANT, [TensorType(I32, (2, 3))], [np.zeros((2, 3), np.int32)],
                                requant=Requant(ReqMode.PER_TENSOR, 3, 4, 0, -128, 127)).desc, None, CPU)
    assert not r.jit


def test_the_real_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    kernels_cpu._check_kernels()  # the kernels as shipped: no exception
    real = kernels_cpu._add_i32

    def off_by_one(x, y, out, *args):
        real(x, y, out, *args)
        out[0] += 1
    monkeypatch.setattr(kernels_cpu, "_add_i32", off_by_one)
    with pytest.raises(ArithmeticError, match="add_i32"):
        kernels_cpu._check_kernels()


def test_without_a_writable_cache_the_kernels_compile_in_memory(monkeypatch):
    """numba refuses cache=True where neither the module's folder nor the user's cache folder is
    writable; the kernels are then compiled without the cache instead of failing the import."""
    seen = []

    def fake_njit(cache, **options):
        seen.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return lambda fn: ("compiled", fn)
    monkeypatch.setattr(kernels_cpu, "njit", fake_njit)
    assert kernels_cpu._compiler(nogil=True)(len) == ("compiled", len)
    assert seen == [True, False]
