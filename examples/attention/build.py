"""A hand-built multi-head attention block as an int8 program (issue #13): sequence T=16, d_model
D=64, 4 heads of 16, seeded random int8 weights (numpy only, deterministic).

    layernorm -> Q, K, V linears -> head views (reshape [T, H, Dh], transpose to [H, T, Dh];
    V to [H, Dh, T]) -> Q.K^T matmul (tb=1: K read by rows) -> causal softmax (a committed
    [256] exp table) -> P.V matmul (tb=1 over V stored [H, Dh, T]: V read by rows, the cheap
    layout) -> heads merged back to [T, D] -> output linear -> residual add with the block input.

    python examples/attention/build.py [--out examples/attention]

Writes <out>/program.json, <out>/weights.safetensors and <out>/inputs.safetensors (4 units).
from_json validates the program, the one-step bounds included; the step reads are printed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))

T, D, H = 16, 64, 4
DH = D // H
UNITS = 4
SEED = 13


def _req(shift: int, mult: int = 1 << 14) -> dict:
    return {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": 0, "lo": -128, "hi": 127}


def _op(name: str, op: str, inputs: list[str], dtype: str, shape: list[int], **attrs) -> dict:
    return {"name": name, "op": op, "inputs": inputs, "out": {"dtype": dtype, "shape": shape}, "attrs": attrs}


def program_json(t: int = T, d: int = D, h: int = H) -> dict:
    """The block at sequence t, d_model d, h heads (the example: T, D, H). The requant multipliers
    of the linears and matmuls halve per doubling of the reduction length (per quadrupling: a
    random sum grows as its square root) from the example's, so that values keep their spread at
    larger sizes, with the shift kept at the example's <= 23 as the exporter keeps it
    (bench/bench_transformer.py builds d = 768, t = 256, 12 heads); the defaults give the
    committed example byte for byte."""
    dh = d // h
    lin, qk, pv = (round(math.log2(n / n0) / 2) for n, n0 in ((d, D), (dh, DH), (t, T)))
    w = [{"name": "ln_g", "dtype": "int8", "shape": [d]}, {"name": "ln_b", "dtype": "int32", "shape": [d]}]
    for n in ("q", "k", "v", "o"):
        w += [{"name": f"w{n}", "dtype": "int8", "shape": [d, d]}, {"name": f"b{n}", "dtype": "int32", "shape": [d]}]
    w += [{"name": "exp", "dtype": "int32", "shape": [256]}]
    ops = [_op("ln", "layernorm", ["x", "ln_g", "ln_b"], "int8", [t, d], x_zp=0, rms=0, eps=64, requant=_req(27))]
    ops += [_op(n, "linear", ["ln", f"w{n}", f"b{n}"], "int8", [t, d], x_zp=0, requant=_req(23, 1 << (14 - lin))) for n in "qkv"]
    for n in "qkv":
        ops.append(_op(f"{n}r", "reshape", [n], "int8", [t, h, dh]))
    ops += [_op("qh", "transpose", ["qr"], "int8", [h, t, dh], perm=[1, 0, 2, 3]),
            _op("kh", "transpose", ["kr"], "int8", [h, t, dh], perm=[1, 0, 2, 3]),
            _op("vt", "transpose", ["vr"], "int8", [h, dh, t], perm=[1, 2, 0, 3]),
            _op("s", "matmul", ["qh", "kh"], "int8", [h, t, t], ta=0, tb=1, za=0, zb=0, requant=_req(21, 1 << (14 - qk))),
            _op("p", "softmax", ["s", "exp"], "int8", [h, t, t], causal=1, off=0),
            _op("a", "matmul", ["p", "vt"], "int8", [h, t, dh], ta=0, tb=1, za=-128, zb=0, requant=_req(22, 1 << (14 - pv))),
            _op("at", "transpose", ["a"], "int8", [t, h, dh], perm=[1, 0, 2, 3]),
            _op("am", "reshape", ["at"], "int8", [t, d]),
            _op("o", "linear", ["am", "wo", "bo"], "int8", [t, d], x_zp=0, requant=_req(23, 1 << (14 - lin))),
            _op("y", "add", ["x", "o"], "int8", [t, d], za=0, zb=0, ma=1 << 20, mb=1 << 20, shift=20, zy=0,
                lo=-128, hi=127)]
    return {"format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": [t, d]},
            "weights": w, "ops": ops, "meta": {"name": "attention", "T": t, "D": d, "heads": h, "seed": SEED}}


def weights(rng: np.random.Generator, d: int = D) -> dict[str, np.ndarray]:
    from gpumesh.node.runtime.randprog import exp_table

    out = {"ln_g": rng.integers(48, 80, d).astype(np.int8), "ln_b": rng.integers(-2**16, 2**16, d).astype(np.int32)}
    for n in "qkvo":
        out[f"w{n}"] = rng.integers(-128, 128, (d, d)).astype(np.int8)
        out[f"b{n}"] = rng.integers(-2**12, 2**12, d).astype(np.int32)
    out["exp"] = exp_table(0.05)
    return out


def build(out: Path) -> None:
    from gpumesh.client.core.ops.rules import step_reads
    from gpumesh.client.core.program import check_weight_values, from_json
    from gpumesh.node.runtime.files import load_program, save_program, save_units

    prog = from_json(program_json())  # validates every op, the one-step bounds included
    rng = np.random.default_rng(SEED)
    ws = weights(rng)
    check_weight_values(prog, {k: v.tobytes() for k, v in ws.items()})
    save_program(out, prog, ws)
    save_units(out / "inputs.safetensors", rng.integers(-128, 128, (UNITS, T, D)).astype(np.int8))
    assert load_program(out).program.root() == prog.root()
    for j, op in enumerate(prog.ops):
        leaves, scanned = step_reads(op.desc)
        print(f"op {j:2d} {op.name:3s} {op.desc.opcode.name.lower():10s} {str(list(op.desc.out.shape)):13s} "
              f"step reads {leaves} leaves, scans {scanned}")
    print(f"program root 0x{prog.root().hex()}, {len(prog.ops)} ops, {len(prog.weights)} weights -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    build(ap.parse_args().out)


if __name__ == "__main__":
    main()
