"""A GPT-2-small-shaped int8 program built by hand (issue #14, scale): d_model 768, 12 layers, 12
heads, context 1,024, vocabulary 50,257, MLP 3,072, seeded random int8 weights generated at run
time (124 MB at full size: never committed). One unit is one sequence of `ctx` tokens; the output
is the greedy next token after it (int32 [1, 1]).

    token bytes int8 [T, 3] -> ids int32 [T]     (a 1x3 linear, mode 0: id = 127*(b0+128) +
                                                  127*(b1+128) + (b2+128): ids below 64,897)
    gather wte [V, D] + gather wpe [T, D] of position ids (an int32 weight) -> add
    12 x pre-norm block:
        layernorm -> Q, K, V linears -> head views [H, T, Dh] (V as [H, Dh, T]) -> Q.K^T (tb = 1)
        -> causal softmax -> P.V (tb = 1 over V stored transposed: V read by rows) -> heads merged
        -> output linear -> residual add -> layernorm -> linear D -> 4D -> GELU (a lut) ->
        linear 4D -> D -> residual add
    last position only: transpose [T, D] -> [D, T], a linear with a one-hot [1, T] weight (the
    identity requant: row T-1 exactly) -> [1, D] -> final layernorm -> LM head linear D -> V with
    the embedding table itself as weight (tied, as GPT-2) -> int8 logits [1, V] -> top-k k = 1 in
    chunk levels (node/runtime/lower_topk.topk_ops: chunks of 8,192 logits, then the 7 candidates).

Why token bytes: v1 unit inputs are int8 (docs/protocol.md 3.1), and a vocabulary of 50,257 needs
more than one byte per id; three bytes and int8 weights 127, 127, 1 reach every id below
127 * 511 = 64,897 (the encoder `encode_ids` writes id % 127 and splits id // 127 <= 510 over the
first two). Why the
last position only: the greedy next token reads only the last row; the LM head over all 1,024
positions would be 1,024x its work (39.5 GMAC, more than the 12 blocks together) and a 51 MB
logits tensor, for the same one-steps.

Requant multipliers follow examples/attention (halved per quadrupling of a reduction length) so
values keep their spread at every size; the residual adds average (x + f(x)) / 2 so that 12 layers
of random weights do not saturate.

    python examples/gpt2_shape/build.py --out DIR [--preset small|tiny] [--layers N]

writes DIR/program.json, DIR/weights.safetensors and DIR/inputs.safetensors (1 unit)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))

from examples.attention.build import _op, _req  # noqa: E402 - after the path fix

SEED = 14
#: id = 127 * (b0 + 128) + 127 * (b1 + 128) + (b2 + 128) (the token linear's weights)
ID_WEIGHTS = (127, 127, 1)
#: Ids the three bytes can carry: [0, ID_LIMIT)
ID_LIMIT = 127 * 511
#: Reduction lengths of examples/attention whose requant multipliers are 2^14 (linears: D = 64;
#: Q.K^T: head size 16; P.V: context 16).
_D0, _DH0, _T0 = 64, 16, 16
GELU_SCALE = 1 / 16  # the lut's input and output scale


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int
    d: int
    heads: int
    ctx: int
    vocab: int
    ff: int

    def with_layers(self, n: int) -> Config:
        return dataclasses.replace(self, layers=n)


PRESETS = {
    "small": Config(layers=12, d=768, heads=12, ctx=1024, vocab=50257, ff=3072),  # GPT-2 small
    "tiny": Config(layers=2, d=64, heads=4, ctx=32, vocab=512, ff=256),  # the unit test's
}


def _shift(n: int, n0: int) -> int:
    return max(0, round(math.log2(n / n0) / 2))


def _lin(x: str, w: str, b: str, name: str, rows: int, n: int, k: int) -> dict:
    return _op(name, "linear", [x, w, b], "int8", [rows, n], x_zp=0, requant=_req(23, 1 << (14 - _shift(k, _D0))))


def _half_add(name: str, a: str, b: str, shape: list[int]) -> dict:
    return _op(name, "add", [a, b], "int8", shape, za=0, zb=0, ma=1 << 19, mb=1 << 19, shift=20, zy=0, lo=-128, hi=127)


def _ln(name: str, x: str, p: str, shape: list[int]) -> dict:
    return _op(name, "layernorm", [x, f"{p}.g", f"{p}.b"], "int8", shape, x_zp=0, rms=0, eps=64, requant=_req(27))


def _block(i: int, x: str, c: Config) -> tuple[list[dict], list[dict]]:
    """Weights and ops of block i reading activation x [T, D]; the last op is named b{i}.y."""
    t, d, h, f = c.ctx, c.d, c.heads, c.ff
    dh = d // h
    p = f"b{i}"
    w = [{"name": f"{p}.ln1.g", "dtype": "int8", "shape": [d]}, {"name": f"{p}.ln1.b", "dtype": "int32", "shape": [d]}]
    for n in "qkvo":
        w += [{"name": f"{p}.w{n}", "dtype": "int8", "shape": [d, d]}, {"name": f"{p}.b{n}", "dtype": "int32", "shape": [d]}]
    w += [{"name": f"{p}.ln2.g", "dtype": "int8", "shape": [d]}, {"name": f"{p}.ln2.b", "dtype": "int32", "shape": [d]},
          {"name": f"{p}.wfc", "dtype": "int8", "shape": [f, d]}, {"name": f"{p}.bfc", "dtype": "int32", "shape": [f]},
          {"name": f"{p}.wpr", "dtype": "int8", "shape": [d, f]}, {"name": f"{p}.bpr", "dtype": "int32", "shape": [d]}]
    ops = [_ln(f"{p}.ln1", x, f"{p}.ln1", [t, d])]
    ops += [_lin(f"{p}.ln1", f"{p}.w{n}", f"{p}.b{n}", f"{p}.{n}", t, d, d) for n in "qkv"]
    ops += [_op(f"{p}.{n}r", "reshape", [f"{p}.{n}"], "int8", [t, h, dh]) for n in "qkv"]
    ops += [_op(f"{p}.qh", "transpose", [f"{p}.qr"], "int8", [h, t, dh], perm=[1, 0, 2, 3]),
            _op(f"{p}.kh", "transpose", [f"{p}.kr"], "int8", [h, t, dh], perm=[1, 0, 2, 3]),
            _op(f"{p}.vt", "transpose", [f"{p}.vr"], "int8", [h, dh, t], perm=[1, 2, 0, 3]),
            _op(f"{p}.s", "matmul", [f"{p}.qh", f"{p}.kh"], "int8", [h, t, t], ta=0, tb=1, za=0, zb=0,
                requant=_req(21, 1 << (14 - _shift(dh, _DH0)))),
            _op(f"{p}.p", "softmax", [f"{p}.s", "exp"], "int8", [h, t, t], causal=1, off=0),
            _op(f"{p}.a", "matmul", [f"{p}.p", f"{p}.vt"], "int8", [h, t, dh], ta=0, tb=1, za=-128, zb=0,
                requant=_req(22, 1 << (14 - _shift(t, _T0)))),
            _op(f"{p}.at", "transpose", [f"{p}.a"], "int8", [t, h, dh], perm=[1, 0, 2, 3]),
            _op(f"{p}.am", "reshape", [f"{p}.at"], "int8", [t, d]),
            _lin(f"{p}.am", f"{p}.wo", f"{p}.bo", f"{p}.o", t, d, d),
            _half_add(f"{p}.r1", x, f"{p}.o", [t, d]),
            _ln(f"{p}.ln2", f"{p}.r1", f"{p}.ln2", [t, d]),
            _lin(f"{p}.ln2", f"{p}.wfc", f"{p}.bfc", f"{p}.fc", t, f, d),
            _op(f"{p}.gelu", "lut", [f"{p}.fc", "gelu"], "int8", [t, f]),
            _lin(f"{p}.gelu", f"{p}.wpr", f"{p}.bpr", f"{p}.pr", t, d, f),
            _half_add(f"{p}.y", f"{p}.r1", f"{p}.pr", [t, d])]
    return w, ops


def program_json(c: Config) -> dict:
    from gpumesh.client.core.ops.types import DType, TensorType
    from gpumesh.node.runtime.lower_topk import topk_ops

    t, d, v = c.ctx, c.d, c.vocab
    w = [{"name": "tok.w", "dtype": "int8", "shape": [1, 3]}, {"name": "tok.b", "dtype": "int32", "shape": [1]},
         {"name": "wte", "dtype": "int8", "shape": [v, d]}, {"name": "wpe", "dtype": "int8", "shape": [t, d]},
         {"name": "pos", "dtype": "int32", "shape": [t]},
         {"name": "exp", "dtype": "int32", "shape": [256]}, {"name": "gelu", "dtype": "int8", "shape": [256]}]
    ops = [_op("ids32", "linear", ["x", "tok.w", "tok.b"], "int32", [t, 1], x_zp=-128),
           _op("ids", "reshape", ["ids32"], "int32", [t]),
           _op("te", "gather", ["ids", "wte"], "int8", [t, d]),
           _op("pe", "gather", ["pos", "wpe"], "int8", [t, d]),
           _half_add("h0", "te", "pe", [t, d])]
    x = "h0"
    for i in range(c.layers):
        bw, bops = _block(i, x, c)
        w, ops, x = w + bw, ops + bops, bops[-1]["name"]
    w += [{"name": "last", "dtype": "int8", "shape": [1, t]}, {"name": "last.b", "dtype": "int32", "shape": [1]},
          {"name": "lnf.g", "dtype": "int8", "shape": [d]}, {"name": "lnf.b", "dtype": "int32", "shape": [d]},
          {"name": "head.b", "dtype": "int32", "shape": [v]}]
    ops += [_op("hT", "transpose", [x], "int8", [d, t], perm=[1, 0, 2, 3]),
            _op("hlast", "linear", ["hT", "last", "last.b"], "int8", [d, 1], x_zp=0, requant=_req(14)),
            _op("hl", "reshape", ["hlast"], "int8", [1, d]),
            _ln("lnf", "hl", "lnf", [1, d]),
            _op("logits", "linear", ["lnf", "wte", "head.b"], "int8", [1, v], x_zp=0,
                requant=_req(23, 1 << (14 - _shift(d, _D0))))]
    ops += topk_ops("next", "logits", TensorType(DType.INT8, (1, v)), 1)
    return {"format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": [t, 3]},
            "weights": w, "ops": ops,
            "meta": {"name": "gpt2_shape", "seed": SEED, **dataclasses.asdict(c)}}


def gelu_table(scale: float = GELU_SCALE) -> np.ndarray:
    """int8 [256]: T[x + 128] = round(gelu(x * scale) / scale) clamped (the exact erf GELU)."""
    xs = np.arange(-128, 128) * scale
    g = 0.5 * xs * (1 + np.vectorize(math.erf)(xs / math.sqrt(2)))
    return np.clip(np.round(g / scale), -128, 127).astype(np.int8)


def weights(c: Config, seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded random weights (numpy only: the same bytes on every machine)."""
    from gpumesh.node.runtime.randprog import exp_table

    rng = np.random.default_rng(seed)
    t, d, v, f = c.ctx, c.d, c.vocab, c.ff

    def i8(*shape: int) -> np.ndarray:
        return rng.integers(-128, 128, shape, dtype=np.int8)

    def i32(n: int, lim: int) -> np.ndarray:
        return rng.integers(-lim, lim, n).astype(np.int32)

    last = np.zeros((1, t), dtype=np.int8)
    last[0, t - 1] = 1
    out = {"tok.w": np.array([ID_WEIGHTS], dtype=np.int8), "tok.b": np.zeros(1, dtype=np.int32),
           "wte": i8(v, d), "wpe": i8(t, d), "pos": np.arange(t, dtype=np.int32),
           "exp": exp_table(0.05), "gelu": gelu_table()}
    for i in range(c.layers):
        p = f"b{i}"
        for n in ("ln1", "ln2"):
            out[f"{p}.{n}.g"] = rng.integers(48, 80, d).astype(np.int8)
            out[f"{p}.{n}.b"] = i32(d, 2**16)
        for n in "qkvo":
            out[f"{p}.w{n}"], out[f"{p}.b{n}"] = i8(d, d), i32(d, 2**12)
        out[f"{p}.wfc"], out[f"{p}.bfc"] = i8(f, d), i32(f, 2**12)
        out[f"{p}.wpr"], out[f"{p}.bpr"] = i8(d, f), i32(d, 2**12)
    out.update({"last": last, "last.b": np.zeros(1, dtype=np.int32), "lnf.g": rng.integers(48, 80, d).astype(np.int8),
                "lnf.b": i32(d, 2**16), "head.b": i32(v, 2**12)})
    return out


def encode_ids(ids: np.ndarray) -> np.ndarray:
    """Token ids [..., T] (0 <= id < ID_LIMIT) as the unit input bytes int8 [..., T, 3]."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min() < 0 or ids.max() >= ID_LIMIT:
        raise ValueError(f"token ids must lie in [0, {ID_LIMIT})")
    hi, lo = ids // 127, ids % 127
    b0 = np.minimum(hi, 255)
    return (np.stack([b0, hi - b0, lo], axis=-1) - 128).astype(np.int8)


def units(c: Config, n: int = 1, seed: int = SEED) -> np.ndarray:
    """n random sequences of c.ctx token ids in [0, vocab), encoded (int8 [n, T, 3])."""
    return encode_ids(np.random.default_rng(seed + 1).integers(0, c.vocab, (n, c.ctx)))


def bundle(c: Config, seed: int = SEED):
    """The validated program with its weights, in memory (a ProgramBundle; nothing written)."""
    from gpumesh.client.core.program import check_weight_values, from_json
    from gpumesh.node.runtime.files import ProgramBundle

    prog = from_json(program_json(c))  # validates every op, the one-step bounds included
    arrays = weights(c, seed)
    wb = {k: np.ascontiguousarray(a).tobytes() for k, a in arrays.items()}
    check_weight_values(prog, wb)
    return ProgramBundle(prog, wb, arrays)


def build(out: Path, c: Config) -> None:
    from gpumesh.node.runtime.files import load_program, save_program, save_units

    b = bundle(c)
    save_program(out, b.program, b.weight_arrays)
    save_units(out / "inputs.safetensors", units(c))
    assert load_program(out).program.root() == b.program.root()
    nbytes = sum(len(v) for v in b.weight_bytes.values())
    print(f"program root 0x{b.program.root().hex()}, {len(b.program.ops)} ops, {len(b.program.weights)} weights "
          f"({nbytes:,} bytes) -> {out}")


def add_config_args(ap: argparse.ArgumentParser) -> None:
    """--preset and --layers (this script's and the benches')."""
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--layers", type=int, help="blocks (default: the preset's; fewer for a quicker run)")


def config_of(a: argparse.Namespace) -> Config:
    c = PRESETS[a.preset]
    if a.layers is None:
        return c
    if a.layers < 1:
        raise SystemExit("--layers must be >= 1")
    return c.with_layers(a.layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    add_config_args(ap)
    a = ap.parse_args()
    build(a.out, config_of(a))


if __name__ == "__main__":
    main()
