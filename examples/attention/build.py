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


def program_json() -> dict:
    w = [{"name": "ln_g", "dtype": "int8", "shape": [D]}, {"name": "ln_b", "dtype": "int32", "shape": [D]}]
    for n in ("q", "k", "v", "o"):
        w += [{"name": f"w{n}", "dtype": "int8", "shape": [D, D]}, {"name": f"b{n}", "dtype": "int32", "shape": [D]}]
    w += [{"name": "exp", "dtype": "int32", "shape": [256]}]
    ops = [_op("ln", "layernorm", ["x", "ln_g", "ln_b"], "int8", [T, D], x_zp=0, rms=0, eps=64, requant=_req(27))]
    ops += [_op(n, "linear", ["ln", f"w{n}", f"b{n}"], "int8", [T, D], x_zp=0, requant=_req(23)) for n in "qkv"]
    for n in "qkv":
        ops.append(_op(f"{n}r", "reshape", [n], "int8", [T, H, DH]))
    ops += [_op("qh", "transpose", ["qr"], "int8", [H, T, DH], perm=[1, 0, 2, 3]),
            _op("kh", "transpose", ["kr"], "int8", [H, T, DH], perm=[1, 0, 2, 3]),
            _op("vt", "transpose", ["vr"], "int8", [H, DH, T], perm=[1, 2, 0, 3]),
            _op("s", "matmul", ["qh", "kh"], "int8", [H, T, T], ta=0, tb=1, za=0, zb=0, requant=_req(21)),
            _op("p", "softmax", ["s", "exp"], "int8", [H, T, T], causal=1, off=0),
            _op("a", "matmul", ["p", "vt"], "int8", [H, T, DH], ta=0, tb=1, za=-128, zb=0, requant=_req(22)),
            _op("at", "transpose", ["a"], "int8", [T, H, DH], perm=[1, 0, 2, 3]),
            _op("am", "reshape", ["at"], "int8", [T, D]),
            _op("o", "linear", ["am", "wo", "bo"], "int8", [T, D], x_zp=0, requant=_req(23)),
            _op("y", "add", ["x", "o"], "int8", [T, D], za=0, zb=0, ma=1 << 20, mb=1 << 20, shift=20, zy=0,
                lo=-128, hi=127)]
    return {"format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": [T, D]},
            "weights": w, "ops": ops, "meta": {"name": "attention", "T": T, "D": D, "heads": H, "seed": SEED}}


def weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from gpumesh.node.runtime.randprog import exp_table

    out = {"ln_g": rng.integers(48, 80, D).astype(np.int8), "ln_b": rng.integers(-2**16, 2**16, D).astype(np.int32)}
    for n in "qkvo":
        out[f"w{n}"] = rng.integers(-128, 128, (D, D)).astype(np.int8)
        out[f"b{n}"] = rng.integers(-2**12, 2**12, D).astype(np.int32)
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
