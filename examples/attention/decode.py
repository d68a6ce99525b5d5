"""One decode step of the attention block of build.py with a KV cache of P positions (issue #13,
head views; issue #14, text generation): the block's weights and requant parameters at sequence
P + 1, the new position's query against the P cached keys and values plus its own.

The unit input carries the step's state as one int8 tensor [1 + 2P, D] (v1 programs take one
int8 unit input): row 0 the new position's block input x, rows 1..P the cached K (the k linear's
output rows of positions 0..P-1, heads merged), rows P+1..2P the cached V. The program:

    slices x, K, V -> layernorm(x) -> q, k, v linears [1, D] -> K' = concat(K, k), V' = concat(V, v)
    along the positions (the KV cache, committed in the trace) -> head views -> q.K'^T [H, 1, P+1]
    -> softmax over P+1 (causal with the position offset P: the query sits at position P, so the
    whole row is unmasked) -> P.V' over V' stored [H, Dh, P+1] -> merge heads -> output linear ->
    residual add. Output: the new position's block output [1, D].

Every op is row-wise in the positions or reads exactly the rows the full block's last query
reads, so the step's output is bit for bit row P of build.program_json(P + 1) on the same P + 1
inputs (tests/unit/runtime/test_decode_step.py), and the caches K', V' are op outputs: any element
of them is disputable at its own one-step (tests/integration/verifier/test_games_decode.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))

from examples.attention.build import _op, program_json  # noqa: E402


def decode_program_json(p: int, d: int = 64, h: int = 4) -> dict:
    """The decode step with a cache of p positions, d_model d, h heads: build.program_json(p + 1, d,
    h)'s weights and per-op attributes, its query, keys and values cut to one new position."""
    full = program_json(p + 1, d, h)
    ops = {o["name"]: o for o in full["ops"]}
    dh = d // h

    def like(name: str, inputs: list[str], shape: list[int], **over) -> dict:
        o = ops[name]
        return _op(name, o["op"], inputs, o["out"]["dtype"], shape, **{**o["attrs"], **over})

    step = [_op("x", "slice", ["u"], "int8", [1, d], axis=0, start=0, len=1),
            _op("kc", "slice", ["u"], "int8", [p, d], axis=0, start=1, len=p),
            _op("vc", "slice", ["u"], "int8", [p, d], axis=0, start=1 + p, len=p),
            like("ln", ["x", "ln_g", "ln_b"], [1, d])]
    step += [like(n, ["ln", f"w{n}", f"b{n}"], [1, d]) for n in "qkv"]
    step += [_op("kk", "concat", ["kc", "k"], "int8", [p + 1, d], axis=0),
             _op("vv", "concat", ["vc", "v"], "int8", [p + 1, d], axis=0),
             _op("qr", "reshape", ["q"], "int8", [1, h, dh]),
             _op("kr", "reshape", ["kk"], "int8", [p + 1, h, dh]),
             _op("vr", "reshape", ["vv"], "int8", [p + 1, h, dh]),
             like("qh", ["qr"], [h, 1, dh]),
             like("kh", ["kr"], [h, p + 1, dh]),
             like("vt", ["vr"], [h, dh, p + 1]),
             like("s", ["qh", "kh"], [h, 1, p + 1]),
             like("p", ["s", "exp"], [h, 1, p + 1], off=p),
             like("a", ["p", "vt"], [h, 1, dh]),
             like("at", ["a"], [1, h, dh]),
             like("am", ["at"], [1, d]),
             like("o", ["am", "wo", "bo"], [1, d]),
             like("y", ["x", "o"], [1, d])]
    return {"format": "gpumesh.program", "version": 1, "input": {"name": "u", "dtype": "int8", "shape": [1 + 2 * p, d]},
            "weights": full["weights"], "ops": step,
            "meta": {"name": "attention decode step", "P": p, "D": d, "heads": h}}


def step_input(x_new: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray) -> np.ndarray:
    """The unit input [1 + 2P, D]: the new position's x [D] (or [1, D]), the cached K and V [P, D]."""
    return np.concatenate([np.reshape(x_new, (1, -1)), k_cache, v_cache]).astype(np.int8)
