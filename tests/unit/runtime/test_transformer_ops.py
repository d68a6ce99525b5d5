"""The integer transformer ops (matmul 0x0F, lut 0x10, mul 0x11, gather 0x12; docs/protocol.md 2.2)
inside whole programs run by the Executor: a hand-built attention-like chain (Q·K^T, a table, P·V,
gating, argmax ids into an embedding table) equals the scalar reference chained on its own outputs,
unit by unit, with units stacked along axis 0 where the program allows it (rank-2 matmuls of two
activations stay per unit inside the kernel), and programs without the new ops keep their roots."""

from __future__ import annotations

import numpy as np
import pytest

from gpumesh.client.core.ops import run_op
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, save_program
from gpumesh.node.runtime.stacking import stack_blocker

T, D, V, E = 8, 16, 10, 12  # argmax over 16 columns: ids 10..15 are outside [0, V)


def _req(mult=1 << 14, shift=20, zp=0):
    return {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": zp, "lo": -128, "hi": 127}


def _op(name, op, inputs, dtype, shape, **attrs):
    return {"name": name, "op": op, "inputs": inputs, "out": {"dtype": dtype, "shape": shape}, "attrs": attrs}


def _program(with_tables: bool):
    w = [{"name": n, "dtype": "int8", "shape": [D, D]} for n in ("wq", "wk", "wv")]
    w += [{"name": n, "dtype": "int32", "shape": [D]} for n in ("bq", "bk", "bv")]
    ops = [_op(n, "linear", ["x", f"w{n}", f"b{n}"], "int8", [T, D], x_zp=1, requant=_req(1 << 12, 16))
           for n in ("q", "k", "v")]
    ops += [_op("s", "matmul", ["q", "k"], "int8", [T, T], ta=0, tb=1, za=3, zb=-2, requant=_req()),
            _op("o", "matmul", ["s", "v"], "int32", [T, D], ta=0, tb=0, za=0, zb=5, requant={"mode": "none"}),
            _op("o8", "requant", ["o"], "int8", [T, D], requant=_req(1 << 10, 18, 2)),
            _op("g", "mul", ["o8", "o8"], "int8", [T, D], za=-1, zb=4, requant=_req(1 << 13, 15, -3)),
            _op("at", "matmul", ["k", "g"], "int8", [D, D], ta=1, tb=0, za=7, zb=0, requant=_req(1 << 9, 17)),
            _op("g2", "mul", ["at", "at"], "int8", [D, D], za=0, zb=0, requant=_req(1 << 13, 15))]
    if with_tables:  # (a rank-2 transpose moves axis 0: this program runs unit by unit anyway)
        ops += [_op("kt", "transpose", ["k"], "int8", [D, T], perm=[1, 0]),
                _op("a", "matmul", ["kt", "g"], "int32", [D, D], ta=0, tb=0, za=7, zb=0, requant={"mode": "none"})]
        w += [{"name": "curve", "dtype": "int8", "shape": [256]}, {"name": "emb", "dtype": "int8", "shape": [V, E]}]
        ops += [_op("p", "lut", ["x", "curve"], "int8", [T, D]),
                _op("pg", "add", ["p", "g"], "int8", [T, D], za=0, zb=0, ma=1 << 20, mb=1 << 18, shift=20, zy=0,
                    lo=-128, hi=127),
                _op("ids", "argmax", ["pg"], "int32", [T]),
                _op("e", "gather", ["ids", "emb"], "int8", [T, E])]
    return from_json({"format": "gpumesh.program", "version": 1,
                      "input": {"name": "x", "dtype": "int8", "shape": [T, D]}, "weights": w, "ops": ops})


def _weights(prog, rng):
    out = {}
    for w in prog.weights:
        shape = tuple(w.type.shape)
        out[w.name] = (rng.integers(-2**20, 2**20, shape).astype(np.int32) if w.type.dtype.label == "int32"
                       else rng.integers(-128, 128, shape).astype(np.int8))
    return out


def _reference_chain(prog, weights, unit):
    outs = []
    for op in prog.ops:
        ins = []
        for s in op.desc.inputs:
            if s.kind == SlotKind.WEIGHT:
                ins.append(np.ascontiguousarray(weights[prog.weights[s.index].name]).tobytes())
            elif s.kind == SlotKind.UNIT_INPUT:
                ins.append(unit.tobytes())
            else:
                ins.append(outs[s.index])
        outs.append(run_op(op.desc, ins))
    return outs


@pytest.mark.parametrize("with_tables", [False, True], ids=["stacked", "tables"])
def test_attention_chain_executor_equals_reference(tmp_path, with_tables, cpu_kernels):
    rng = np.random.default_rng(13)
    prog = _program(with_tables)
    # the tables program holds a rank-2 transpose that moves axis 0, so it runs unit by unit
    assert (stack_blocker(prog) is None) != with_tables
    weights = _weights(prog, rng)
    save_program(tmp_path, prog, weights)
    ex = Executor(load_program(tmp_path))
    units = rng.integers(-128, 128, (5, T, D)).astype(np.int8)
    got = ex.run_units(units)
    for u in range(len(units)):
        ref = _reference_chain(prog, weights, units[u])
        assert np.ascontiguousarray(got[u]).tobytes() == ref[-1], f"unit {u}"
        assert list(ex.trace(units[u]).outputs) == ref, f"unit {u}: the trace"
    if with_tables:  # ids outside [0, V) occurred, and gave zero rows
        ids = np.frombuffer(ref[-2], dtype="<i4")
        assert (ids >= V).any()
        rows = np.frombuffer(ref[-1], dtype=np.int8).reshape(T, E)
        assert not rows[ids >= V].any() and rows[ids < V].any()
