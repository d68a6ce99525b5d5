"""Text-generation programs (docs/protocol.md 2.6, "Generation programs"): greedy decoding of N
tokens after a prompt window of P bytes, unrolled into one int8 program with its KV cache in the
trace.

The model is exported once at the full window W = P + N - 1 (export.export_json: the quantization
scales are calibrated on windows of W tokens), and that program's ops are re-emitted per step:

- prefill: every op over the P prompt positions (the int8 unit input `id - 128` [B, P]); the LM
  head's input is sliced to the last position (slice 0x18), so the head and argmax give token 1
  (int32 [B, 1]);
- decode step k = 1 .. N - 1: every op over one position, P + k - 1, fed by token k (the argmax
  output is int32 ids: it goes straight into the embedding gather, the int8 input's widening is
  not re-run); learned position ids are a per-step [B, 1] weight; each attention matmul's
  right-hand operand (K, and V) is `concat(cache, new row)` (0x17) along its position axis, the
  cache being the previous step's (or the prefill's) operand; softmax and rope take the row's
  position through `off`;
- output: the tokens `concat(token 1, token 2, ...)` int32 [B, N].

Every op is row-wise in the positions or reads exactly the rows the full program's query row
reads, with the full program's attributes and scales, so token k + 1 equals the full program's
argmax at position P + k - 1 on the window prompt + tokens 1..k (tests/unit/runtime/
test_export_generate.py), and every element of every step, caches included, is an op output of
the trace (disputable at its own one-step).

The position axis of every tensor is found by following the full program's ops from the unit
input ([B, W], axis 1): reshapes that keep the axis, transposes, row-wise ops (linear, norms,
lookups, adds, products, gathers, argmax), matmuls of two activations (the right operand's
position axis becomes the key axis of scores, or is contracted against it). Anything else is
refused in one line naming the op.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from gpumesh.client.core.program import MAX_OPS, Program
from gpumesh.node.runtime.export import chunk_reductions, export_json
from gpumesh.node.runtime.export_graph import ExportError
from gpumesh.node.runtime.textgen import GENERATION_TASK, PAD_BYTE, generation_meta

__all__ = ["GENERATION_TASK", "PAD_BYTE", "ExportError", "export_generation", "generation_meta"]

_ROWWISE = {"linear", "layernorm", "lut", "relu", "add", "mul", "requant", "argmax", "rope"}


def export_generation(model: nn.Module, calib: torch.Tensor, unit_batch: int, generate: int,
                      prompt_len: int | None = None, meta: dict | None = None,
                      clip: float | None = None, smooth: float | None = None) -> tuple[Program, dict[str, np.ndarray]]:
    """A program generating `generate` tokens greedily after a prompt of `prompt_len` tokens
    (default: the calibration windows' length - generate + 1, so they cover the whole window).
    `calib`: integer token windows [S, T] in [0, 256), T >= prompt_len + generate - 1 (cut to
    that). Returns the validated Program and its weight arrays."""
    if calib.is_floating_point() or calib.dim() != 2:
        raise ExportError("a generation program calibrates on integer token windows [S, T]")
    if generate < 1:
        raise ExportError(f"--generate {generate}: generate at least one token")
    t = calib.shape[1]
    p = t - generate + 1 if prompt_len is None else prompt_len
    w = p + generate - 1
    if p < 1:
        raise ExportError(f"--generate {generate} leaves no prompt: the calibration windows have {t} tokens, so at "
                          f"most {t} generated tokens (the window is prompt + generated - 1)")
    if w > t:
        raise ExportError(f"a prompt of {p} and {generate} generated tokens need calibration windows of {w} tokens; "
                          f"these have {t}")
    obj, arrays = export_json(model, calib[:, :w].contiguous(), unit_batch, True, meta, clip, smooth)
    probe = _head_on_last_position(obj)
    lowered = chunk_reductions(probe)
    full = Program.from_json(lowered)
    gen, garrays = generation_json(obj, arrays, full, p, generate)
    if len(lowered["ops"]) > len(probe["ops"]):  # the LM head's argmax is chunked (a large vocabulary)
        gen = chunk_reductions(gen)
    if len(gen["ops"]) > MAX_OPS:
        first = sum(1 for o in gen["ops"] if "@" not in o["name"] and o["name"] != "tokens")
        per_step = (len(gen["ops"]) - first) // max(1, generate - 1)
        raise ExportError(f"--generate {generate}: the program would have {len(gen['ops'])} ops, above the "
                          f"{MAX_OPS} of docs/protocol.md 3.4; this model generates at most "
                          f"{1 + (MAX_OPS - first) // per_step} tokens per program")
    return Program.from_json(gen), garrays


def _head_on_last_position(obj: dict) -> dict:
    """The full-window program JSON with the LM head reading the last position only (a slice before
    it), validated for the types of its ops: the full window's logits [B, W, V] can be far above
    the 2^28-byte tensor limit of 3.4 (GPT-2's vocabulary at B 8, W 256: 411 MB), while no step of
    the generation program computes more than one position of them. Every op keeps its name and
    rank; only the head's and the argmax's position axis is 1 instead of W, which
    `generation_json` sets per step anyway."""
    if obj["ops"][-1]["op"] != "argmax":
        raise ExportError("a generation program ends in the LM head's argmax (export with --argmax)")
    head = obj["ops"][-1]["inputs"][0]
    at = next(i for i, o in enumerate(obj["ops"]) if o["name"] == head)
    src = obj["ops"][at]["inputs"][0]
    if src == obj["input"]["name"] or any(w["name"] == src for w in obj["weights"]):
        return obj
    prefix = {**obj, "ops": obj["ops"][:at]}
    pre = Program.from_json(prefix)
    types = {obj["input"]["name"]: tuple(obj["input"]["shape"])}
    types.update({w["name"]: tuple(w["shape"]) for w in obj["weights"]})
    types.update({o.name: o.desc.out.shape for o in pre.ops})
    axis = _axes(prefix, types).get(src)
    if axis is None:
        return obj
    cut = {"name": f"{src}.last", "op": "slice", "inputs": [src],
           "attrs": {"axis": axis, "start": types[src][axis] - 1, "len": 1}}
    ops = [*obj["ops"][:at], cut, {**obj["ops"][at], "inputs": [cut["name"], *obj["ops"][at]["inputs"][1:]]},
           *obj["ops"][at + 1 :]]
    return {**obj, "ops": ops}


def generation_json(obj: dict, arrays: dict[str, np.ndarray], full: Program, p: int,
                    n: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The full-window program JSON `obj` (its validated form `full`, for the types) re-emitted as
    prefill over p positions + n - 1 decode steps (module docstring)."""
    types = {obj["input"]["name"]: tuple(obj["input"]["shape"])}
    types.update({w["name"]: tuple(w["shape"]) for w in obj["weights"]})
    types.update({o.name: o.desc.out.shape for o in full.ops})
    if obj["ops"][-1]["op"] != "argmax":
        raise ExportError("a generation program ends in the LM head's argmax (export with --argmax)")
    axes = _axes(obj, types)
    wnd = types[obj["input"]["name"]][1]
    head = obj["ops"][-1]["inputs"][0]
    ids = _token_ids(obj)
    widen = _ancestors(obj, ids)  # the int8 input's widening to int32 ids: prefill only
    weights = {w["name"]: w for w in obj["weights"]}
    out_w: dict[str, dict] = {}
    out_a: dict[str, np.ndarray] = {}
    ops: list[dict] = []
    cache: dict[str, str] = {}  # attention matmul -> the name of its right operand so far (K or V)

    def use_weight(name: str) -> str:
        out_w.setdefault(name, weights[name])
        out_a[name] = arrays[name]
        return name

    tokens, acc = [], ""
    for k in range(n):
        pos0, rows = (0, p) if k == 0 else (p + k - 1, 1)
        tag = "" if k == 0 else f"@{k}"
        names = {obj["input"]["name"]: obj["input"]["name"]}
        length = {obj["input"]["name"]: rows}  # the current length of each tensor's position axis
        if k > 0:
            names[ids], length[ids] = tokens[-1], 1
        for o in obj["ops"]:
            if k > 0 and o["name"] in widen:
                continue
            ins, kind = [], o["op"]
            for i, src in enumerate(o["inputs"]):
                if src in weights and axes.get(src) is not None:  # position ids: this step's positions
                    name = f"{src}{tag}"
                    a = np.take(arrays[src], range(pos0, pos0 + rows), axis=axes[src])
                    out_w[name] = {**weights[src], "name": name, "shape": list(a.shape)}
                    out_a[name] = np.ascontiguousarray(a)
                    ins.append(name)
                    names[src], length[name] = name, rows
                elif src in weights:
                    ins.append(use_weight(src))
                elif kind == "matmul" and i == 1:  # K or V: the cache grows by this step's rows
                    new = names[src]
                    if k > 0:
                        kv = f"{src}.kv{tag}"
                        ops.append({"name": kv, "op": "concat", "inputs": [cache[o["name"]], new],
                                    "attrs": {"axis": axes[src]}})
                        new = kv
                    cache[o["name"]] = new
                    ins.append(new)
                else:
                    ins.append(names[src])
            if o["name"] == head and rows > 1:  # the LM head reads the last position only
                src = o["inputs"][0]
                cut = f"{src}.last"
                ops.append({"name": cut, "op": "slice", "inputs": [ins[0]],
                            "attrs": {"axis": axes[src], "start": rows - 1, "len": 1}})
                ins[0] = cut
            row_len = next((length[names.get(s, s)] for s in o["inputs"] if axes.get(s) is not None
                            and names.get(s, s) in length), rows)
            if o["name"] == head:
                row_len = 1
            attrs = dict(o.get("attrs") or {})
            if kind in ("softmax", "rope"):
                attrs["off"] = int(attrs.get("off", 0)) + pos0
            entry = {"name": f"{o['name']}{tag}", "op": kind, "inputs": ins, "attrs": attrs}
            if "out" in o:
                shape = list(types[o["name"]])
                if axes.get(o["name"]) is not None:
                    shape[axes[o["name"]]] = row_len
                entry["out"] = {**o["out"], "shape": shape}
            ops.append(entry)
            names[o["name"]] = entry["name"]
            length[entry["name"]] = row_len
        tok = names[obj["ops"][-1]["name"]]
        if tokens:
            ops.append({"name": "tokens" if k == n - 1 else f"tokens{tag}", "op": "concat",
                        "inputs": [acc, tok], "attrs": {"axis": 1}})
        acc = ops[-1]["name"]
        tokens.append(tok)
    meta = {**(obj.get("meta") or {}), "task": GENERATION_TASK, "prompt_len": p, "generate": n,
            "pad_byte": PAD_BYTE, "output": "generated tokens", "window": wnd}
    inp = {**obj["input"], "shape": [types[obj["input"]["name"]][0], p]}
    ops, kept = _prune(ops)
    wlist = [w for name, w in out_w.items() if name in kept]
    return ({"format": obj["format"], "version": obj["version"], "input": inp, "weights": wlist, "ops": ops,
             "meta": meta}, {w["name"]: out_a[w["name"]] for w in wlist})


def _prune(ops: list[dict]) -> tuple[list[dict], set[str]]:
    keep, need = [], {ops[-1]["name"]}
    for o in reversed(ops):
        if o["name"] in need:
            keep.append(o)
            need.update(o["inputs"])
    return keep[::-1], need


def _token_ids(obj: dict) -> str:
    """The int32 token ids the embedding gathers (the widened unit input)."""
    op_names = {o["name"] for o in obj["ops"]}
    for o in obj["ops"]:
        if o["op"] == "gather" and o["inputs"][0] in op_names:
            return o["inputs"][0]
    raise ExportError("a generation program embeds its tokens with an nn.Embedding (a gather of the ids)")


def _ancestors(obj: dict, name: str) -> set[str]:
    by = {o["name"]: o for o in obj["ops"]}
    out, todo = set(), [name]
    while todo:
        x = todo.pop()
        if x in by and x not in out:
            out.add(x)
            todo.extend(by[x]["inputs"])
    return out


def _axes(obj: dict, types: dict) -> dict[str, int | None]:
    """The position axis of the unit input, of every op output and of every position-id weight
    (None: no position axis), following the full program's ops; refuses an op whose position
    axis cannot be followed."""
    ax: dict[str, int | None] = {obj["input"]["name"]: 1}
    keys: dict[str, int | None] = {}
    wnd = types[obj["input"]["name"]][1]
    weights = {w["name"] for w in obj["weights"]}

    def refuse(o: dict, why: str) -> ExportError:
        return ExportError(f"{o['name']} ({o['op']}): {why}; a generation program cannot follow its positions")

    for o in obj["ops"]:
        kind, ins, name = o["op"], o["inputs"], o["name"]
        shape = types[name]
        if kind == "gather" and ins[0] in weights:  # learned positions: ids committed as a weight
            ax[ins[0]] = 1 if len(types[ins[0]]) == 2 and types[ins[0]][1] == wnd else None
            if ax[ins[0]] is None:
                raise refuse(o, "position ids that are not [B, window]")
        src = [ax.get(s) for s in ins if s not in weights or ax.get(s) is not None]
        r = next((a for a in src if a is not None), None)
        key = next((keys.get(s) for s in ins if keys.get(s) is not None), None)
        if kind == "matmul" and ins[1] not in weights:
            ta, tb = o["attrs"].get("ta", 0), o["attrs"].get("tb", 0)
            ra, rb, rank = ax.get(ins[0]), ax.get(ins[1]), len(shape)
            a_rows = rank - 2 if ta == 0 else rank - 1
            b_cols = rank - 1 if tb == 0 else rank - 2
            if ra != a_rows or rb is None:
                raise refuse(o, "a matmul whose left operand's rows are not the positions")
            if rb == b_cols and keys.get(ins[0]) is None:  # scores = q k^T
                ax[name], keys[name] = rank - 2, rank - 1
            elif rb != b_cols and keys.get(ins[0]) == (rank - 2 if ta else rank - 1):  # P V
                ax[name], keys[name] = rank - 2, None
            else:
                raise refuse(o, "a matmul of two activations other than q k^T and P V")
            continue
        if kind == "reshape":
            ax[name] = None if r is None else _follow(types[ins[0]], shape, r)
            if key is not None or (r is not None and ax[name] is None):
                raise refuse(o, "a reshape that merges or splits the position axis")
            continue
        if kind == "transpose":
            perm = o["attrs"]["perm"]
            ax[name] = None if r is None else perm.index(r)
            keys[name] = None if key is None else perm.index(key)
            continue
        if kind == "softmax":
            if key != len(shape) - 1 or r != len(shape) - 2:
                raise refuse(o, "a softmax not over the keys of a query row")
            ax[name], keys[name] = r, key
            continue
        if r is None:
            ax[name] = None
            continue
        if key is not None:
            raise refuse(o, "an op other than softmax over attention scores")
        if kind == "gather":
            ax[name] = r
        elif kind in _ROWWISE:
            if r >= len(shape) or (kind in ("linear", "layernorm", "argmax") and r == len(types[ins[0]]) - 1):
                raise refuse(o, "an op that reduces over the position axis")
            if kind == "rope" and r != len(shape) - 2:
                raise refuse(o, "rope whose rows are not the positions")
            ax[name] = r
        else:
            raise refuse(o, "not a row-wise op")
    return ax


def _follow(src: tuple, dst: tuple, r: int) -> int | None:
    """The axis of `dst` that is axis r of `src` under a reshape (same elements before it and the
    same length), or None."""
    before = math.prod(src[:r])
    for a in range(len(dst)):
        if math.prod(dst[:a]) == before and dst[a] == src[r]:
            return a
    return None
