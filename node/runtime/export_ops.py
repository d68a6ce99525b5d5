"""The export's program builder and its transformer layers: token input, embeddings (and learned
positions as a gather of committed position ids), LayerNorm / RMSNorm, elementwise activations as
lookup tables, products, attention (explicit matmul + softmax, `F.scaled_dot_product_attention`,
nn.MultiheadAttention), head views (reshape / transpose), constants, and the causal mask.

Quantization (docs/protocol.md 2.6): symmetric per-tensor int8 activations (zero point 0, except
softmax probabilities: scale 1/256, zero point -128), per-channel int8 weights for Linear, one
scale per table for Embedding and per gamma for the norms. Every real multiplier becomes a requant
(mult, shift) through quant.py.

Adapter code (torch); imported by gpumesh.node.runtime.export.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from gpumesh.client.core.ops.reference import ROPE_ONE
from gpumesh.client.core.ops.rules import MAX_LN_EPS_TERM, MAX_STEP_LEAVES, range_leaves
from gpumesh.node.runtime.export_graph import ExportError, describe, is_rmsnorm, kept
from gpumesh.node.runtime.export_graph import is_call as _is
from gpumesh.node.runtime.quant import (
    act_scale,
    requant_multipliers,
)
from gpumesh.node.runtime.randprog import exp_table

#: Softmax probabilities: p = (y + 128) / 256 (docs/protocol.md 2.2.1).
P_SCALE, P_ZP = 1.0 / 256.0, -128
#: Token programs: a byte id b in [0, 256) is the int8 input b - 128.
TOKEN_OFFSET = 128


@dataclass
class Val:
    """What a graph node is in the program: a tensor name, its real scale and zero point, and its
    layout: "native" (torch's own layout), "nhwc" (a 4-D NCHW torch tensor held channels-last),
    "flat_chw" (a flattened NHWC activation of a CHW model: the next Linear permutes its weight),
    "ids" (int32 token ids), "pooled" (a global avgpool's [N, C] of torch's [N, C, 1, 1])."""

    name: str
    scale: float
    kind: str
    chw: tuple[int, int, int] | None = None
    zp: int = 0
    causal: bool = False  # a causal mask was applied (its softmax masks j > t)
    swapped: Val | None = None  # this value is `swapped` with its last two dims exchanged


@dataclass
class Builder:
    stats: dict[str, float]
    weights: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ops: list[dict] = field(default_factory=list)

    def weight(self, name: str, a: np.ndarray) -> str:
        self.weights.append({"name": name, "dtype": "int8" if a.dtype == np.int8 else "int32", "shape": list(a.shape)})
        self.arrays[name] = a
        return name

    def op(self, name: str, op: str, inputs: list[str], attrs: dict, out: dict | None = None) -> str:
        entry = {"name": name, "op": op, "inputs": inputs, "attrs": attrs}
        if out is not None:
            entry["out"] = out
        self.ops.append(entry)
        return name

    def scale(self, key: str) -> float:
        """The activation scale of a node (or `node:part`) from calibration. A tensor that is all
        zero on the calibration data gets the scale of max 1.0: its int8 value is 0 whatever the
        scale, and a tiny one would only make every multiplier that divides by it overflow."""
        m = self.stats.get(key, 0.0)
        return act_scale(m) if m > 0 else 1.0 / 127.0

    def prune(self) -> None:
        """Drop ops nothing reads (a transpose folded into a matmul, a Linear split in parts) and
        the weights only they read; the program output is the last op."""
        keep, need = [], {self.ops[-1]["name"]}
        for o in reversed(self.ops):
            if o["name"] in need:
                keep.append(o)
                need.update(o["inputs"])
        self.ops = keep[::-1]
        self.weights = [w for w in self.weights if w["name"] in need]
        self.arrays = {w["name"]: self.arrays[w["name"]] for w in self.weights}


def per_tensor(real: float, zp: int = 0, lo: int = -128, hi: int = 127) -> dict:
    (mult,), shift = requant_multipliers([real])
    return {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": zp, "lo": lo, "hi": hi}


def _q8(a: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(a / scale), -128, 127).astype(np.int8)


def _int8_const(v: torch.Tensor) -> tuple[np.ndarray, float]:
    a = v.detach().double().numpy()
    s = act_scale(float(np.abs(a).max()) if a.size else 0.0) if np.abs(a).max() > 0 else 1.0 / 127.0
    return _q8(a, s), s


class Ctx:
    """The state of one export walk (node -> Val, aliases, the builder, calibration scales)."""

    def __init__(self, gm: fx.GraphModule, b: Builder, dyn: set[fx.Node]) -> None:
        self.gm, self.b, self.dyn = gm, b, dyn
        self.mods = dict(gm.named_modules())
        self.vals: dict[fx.Node, Val] = {}
        self.alias: dict[fx.Node, fx.Node] = {}
        self._named: set[str] = set()
        self.rope: dict[fx.Node, Rope] = {}  # rotary embeddings by output node (find_rope)
        self.skip: set[fx.Node] = set()  # nodes inside them (no op of their own)

    def src(self, n: fx.Node) -> Val:
        while n in self.alias:
            n = self.alias[n]
        return self.vals[n]

    @staticmethod
    def value(n) -> torch.Tensor | float | int:
        """A constant's value (a static node's example value, or a literal)."""
        return n.meta["val"] if isinstance(n, fx.Node) else n

    @staticmethod
    def shape(n: fx.Node) -> list[int]:
        return list(n.meta["val"].shape)

    def name(self, n: fx.Node) -> str:
        """Program name of a node: the module's path on its first call, the fx node name after
        (a module called twice gets two sets of ops and weights)."""
        base = str(n.target) if n.op == "call_module" else n.name
        if base in self._named:
            base = n.name
        self._named.add(base)
        return base

    def refuse(self, n: fx.Node, why: str) -> ExportError:
        return ExportError(f"{describe(n, self.mods)}: {why}")


# ---------------------------------------------------------------------------------------------
# Token input, embeddings, constants


def token_input(c: Ctx, n: fx.Node, shape: list[int]) -> dict:
    """int8 unit input (id - 128) -> int32 ids: a 1x1 linear with weight 1 and bias 128 (mode 0
    gives the exact int32), between reshapes to and from a last axis of 1."""
    b = c.b
    col = b.op(f"{n.name}.col", "reshape", [n.name], {}, {"dtype": "int8", "shape": [*shape, 1]})
    one = b.weight(f"{n.name}.one", np.ones((1, 1), dtype=np.int8))
    off = b.weight(f"{n.name}.offset", np.full(1, TOKEN_OFFSET, dtype=np.int32))
    wide = b.op(f"{n.name}.int32", "linear", [col, one, off], {"x_zp": 0})
    c.vals[n] = Val(b.op(f"{n.name}.ids", "reshape", [wide], {}, {"dtype": "int32", "shape": shape}), 1.0, "ids")
    return {"name": n.name, "dtype": "int8", "shape": shape}


def _table(c: Ctx, name: str, m: nn.Embedding) -> tuple[str, float]:
    if m.max_norm is not None:
        raise ExportError(f"{name} (nn.Embedding): max_norm renormalizes rows at run time; export without it")
    q, s = _int8_const(m.weight)
    return c.b.weight(f"{name}.table", q), s


def embedding(c: Ctx, n: fx.Node, m: nn.Embedding) -> None:
    ids = c.src(n.args[0])
    if ids.kind != "ids":
        raise c.refuse(n, "an Embedding reads the token input (int ids)")
    name = c.name(n)
    table, s = _table(c, name, m)
    c.vals[n] = Val(c.b.op(name, "gather", [ids.name, table], {}), s, "native")


def constant(c: Ctx, n: fx.Node, const, shape: list[int], tag: str) -> Val:
    """A constant operand broadcast to `shape` as a program value. An Embedding of constant ids
    (learned positions: `wpe(torch.arange(T))`) is a gather from the committed table through an
    int32 weight of those ids; anything else an int8 weight of its own scale."""
    if isinstance(const, fx.Node) and const.op == "call_module" and isinstance(c.mods[const.target], nn.Embedding):
        ids = c.value(const.args[0])
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point():
            name = c.name(const)
            table, s = _table(c, name, c.mods[const.target])
            pos = np.ascontiguousarray(np.broadcast_to(ids.numpy().astype(np.int32), shape[:-1]))
            ids_w = c.b.weight(f"{name}.ids", pos)
            return Val(c.b.op(name, "gather", [ids_w, table], {}), s, "native")
    v = c.value(const)
    v = torch.as_tensor(v, dtype=torch.float64)
    try:
        v = v.expand(shape)
    except RuntimeError:
        raise c.refuse(n, f"a constant of shape {list(v.shape)} does not broadcast to {shape}") from None
    q, s = _int8_const(v.contiguous())
    w = c.b.weight(f"{n.name}.{tag}", np.ascontiguousarray(q))
    return Val(w, s, "native")


# ---------------------------------------------------------------------------------------------
# Norms and elementwise tables


def norm(c: Ctx, n: fx.Node, m: nn.Module) -> None:
    x = c.src(n.args[0])
    rms = is_rmsnorm(m)
    d = c.shape(n)[-1]
    if not rms and tuple(m.normalized_shape) != (d,):
        raise c.refuse(n, f"normalized_shape {tuple(m.normalized_shape)}: only the last axis ({d}) is in the op set")
    eps = getattr(m, "eps", None)
    if eps is None:
        eps = getattr(m, "variance_epsilon", None)
    if eps is None:
        eps = torch.finfo(torch.float32).eps
    w = getattr(m, "weight", None)
    g = w.detach().double().numpy() if w is not None else np.ones(d)
    beta = getattr(m, "bias", None) if not rms else None
    beta = beta.detach().double().numpy() if beta is not None else np.zeros(d)
    s_g = max(float(np.abs(g).max()), 1e-12) / 127.0
    gq = _q8(g, s_g)
    s_z = s_g / 4096.0  # z carries 12 fractional bits (docs/protocol.md 2.2.2)
    bq = np.clip(np.rint(beta / s_z), -(2**31), 2**31 - 1).astype(np.int32)
    eps_q = int(round(float(eps) / (x.scale * x.scale)))
    eps_q = max(0, min(eps_q, MAX_LN_EPS_TERM // d**3, (1 << 32) - 1))
    name = c.name(n)
    s_y = c.b.scale(n.name)
    attrs = {"x_zp": x.zp, "rms": int(rms), "eps": eps_q, "requant": per_tensor(s_z / s_y)}
    gw, bw = c.b.weight(f"{name}.gamma", gq), c.b.weight(f"{name}.beta", bq)
    c.vals[n] = Val(c.b.op(name, "layernorm", [x.name, gw, bw], attrs), s_y, "native")


def lut(c: Ctx, n: fx.Node, fn) -> None:
    """y = fn(x) elementwise, as a committed 256-entry table over every int8 input."""
    x = c.src(n.args[0])
    s_y = c.b.scale(n.name)
    grid = torch.tensor([(q - x.zp) * x.scale for q in range(-128, 128)], dtype=torch.float32)
    with torch.no_grad():
        t = fn(grid).double().numpy()
    name = c.name(n)
    table = c.b.weight(f"{name}.table", _q8(t, s_y))
    c.vals[n] = Val(c.b.op(name, "lut", [x.name, table], {}), s_y, x.kind, x.chw)


# ---------------------------------------------------------------------------------------------
# Products and attention


def mul(c: Ctx, n: fx.Node, a: Val, b: Val) -> None:
    s_y = c.b.scale(n.name)
    attrs = {"za": a.zp, "zb": b.zp, "requant": per_tensor(a.scale * b.scale / s_y)}
    c.vals[n] = Val(c.b.op(c.name(n), "mul", [a.name, b.name], attrs), s_y, a.kind, a.chw)


def matmul(c: Ctx, name: str, a: Val, b: Val, s_y: float, real: float = 1.0, b_shape: list[int] | None = None) -> Val:
    """y = (a @ b) * real, requantized to scale s_y. A transposed operand made by a transpose of the
    last two dims is read in place (ta / tb); B read by column beyond the one-step bounds is
    transposed first and read by rows (docs/protocol.md 2.2, matmul)."""
    ta = tb = 0
    if a.swapped is not None:
        a, ta = a.swapped, 1
    if b.swapped is not None:
        b, tb = b.swapped, 1
    elif b_shape is not None:
        k, n_ = b_shape[-2], b_shape[-1]
        if range_leaves(k) + range_leaves((k - 1) * n_ + 1) > MAX_STEP_LEAVES:
            perm = [*range(len(b_shape) - 2), len(b_shape) - 1, len(b_shape) - 2]
            bt = c.b.op(f"{name}.bt", "transpose", [b.name], {"perm": perm})
            b, tb = replace(b, name=bt, swapped=None), 1
    attrs = {"ta": ta, "tb": tb, "za": a.zp, "zb": b.zp, "requant": per_tensor(a.scale * b.scale * real / s_y)}
    return Val(c.b.op(name, "matmul", [a.name, b.name], attrs), s_y, "native")


def softmax(c: Ctx, name: str, x: Val, causal: bool) -> Val:
    if x.zp != 0:
        raise ExportError(f"{name}: softmax of a value with zero point {x.zp}")
    table = c.b.weight(f"{name}.exp", exp_table(x.scale))
    return Val(c.b.op(name, "softmax", [x.name, table], {"causal": int(causal), "off": 0}), P_SCALE, "native",
               zp=P_ZP)


def is_causal_mask(keep: torch.Tensor, shape: list[int]) -> bool:
    """`keep` (True where attention is allowed) broadcast to `shape` is the causal pattern j <= t."""
    try:
        k = keep.expand(shape)
    except RuntimeError:
        return False
    t, L = shape[-2], shape[-1]
    want = torch.ones(t, L, dtype=torch.bool).tril()
    return bool((k == want).all())


def attention(c: Ctx, n: fx.Node, name: str, q: Val, k: Val, v: Val, v_shape: list[int], mask, causal: bool,
              scale: float | None, s_out: float) -> Val:
    """softmax(q k^T * scale [+ mask]) v for q, k, v [.., T, Dh] (k read by rows); `mask` True
    where attention is allowed, or additive 0 / -inf; the scores' range is the calibration's
    `node:scores`."""
    if mask is not None:
        keep = mask if mask.dtype == torch.bool else kept(mask)
        if mask.dtype != torch.bool and bool((mask[keep] != 0).any()):
            raise c.refuse(n, "an additive attention mask other than 0 / -inf is not in the op set")
        shape = [*v_shape[:-1], v_shape[-2]]
        if not is_causal_mask(keep, shape):
            raise c.refuse(n, "only the causal mask is in the op set (is_causal=True or a lower-triangular mask)")
        causal = True
    dh = v_shape[-1]
    real = scale if scale is not None else 1.0 / math.sqrt(dh)
    s_sc = c.b.scale(f"{n.name}:scores")
    scores = matmul(c, f"{name}.scores", q, replace(k, swapped=k), s_sc, real)  # k^T read in place (tb = 1)
    p = softmax(c, f"{name}.probs", scores, causal)
    return matmul(c, name, p, v, s_out, 1.0, v_shape)


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (docs/protocol.md 2.2.3 and 2.6)

#: Value-preserving calls on a float activation (the walk aliases them).
SAME_METHODS = {"contiguous", "float", "clone", "detach", "type_as", "to"}
CAT_FNS = {torch.cat, getattr(torch, "concat", torch.cat), getattr(torch, "concatenate", torch.cat)}
_NEG_FNS = {operator.neg, torch.neg}
_MULS = {operator.mul, torch.mul}
_ADDS = {operator.add, torch.add}
_FORM = "q * cos + rotate_half(q) * sin with rotate_half(q) = cat(-q[..., D/2:], q[..., :D/2], dim=-1)"
_INTERLEAVED = ("the rope op uses rotate-half pairing (Llama / GPT-NeoX: column k with k + D/2), not interleaved "
                "pairs (2i, 2i+1); permute each head's rows of the q and k projections (even rows first, then odd) "
                "and rotate with rotate_half, cos and sin of cat(freqs, freqs): the same q.K^T")


@dataclass
class Rope:
    """A rotary embedding found in the graph: `out` (the add) = x * cos + rotate_half(x) * sin."""

    x: fx.Node
    out: fx.Node
    table: np.ndarray  # int32 [T, D/2, 2]: round(2^15 (cos, sin) / gain)
    gain: float  # max(1, max |cos|, |sin|): a table scaled down to stay within +-1, the rest in the requant
    inner: set[fx.Node]  # the pattern's other nodes (no op of their own)


def _module_of(n: fx.Node) -> str:
    """`path (Class)` of the module whose forward made node n (the model itself: `model (Class)`)."""
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return f"{n.name} (the model's forward)"
    path, cls = list(stack.values())[-1]
    return f"{path} ({getattr(cls, '__name__', cls)})"


def _base(n):
    """n through value-preserving calls (`.float()`, `.contiguous()`, `.to(dtype)`, ...)."""
    while isinstance(n, fx.Node) and n.op == "call_method" and n.target in SAME_METHODS:
        n = n.args[0]
    return n


def _last_slice(n: fx.Node, dyn: set) -> tuple[fx.Node, slice] | None:
    """(source, slice) for `x[..., a:b:c]` / `x[:, :, a:b:c]` of an activation (the last axis only)."""
    if not (n.op == "call_function" and n.target is operator.getitem and n.args[0] in dyn):
        return None
    src, idx = n.args
    idx = idx if isinstance(idx, tuple) else (idx,)
    v = src.meta.get("val")
    if not isinstance(v, torch.Tensor) or not idx or not isinstance(idx[-1], slice):
        return None
    full = slice(None)
    if idx[:-1] == (Ellipsis,) or (len(idx) == v.dim() and all(i == full for i in idx[:-1])):
        return src, idx[-1]
    return None


def _half(n, dyn: set) -> tuple[fx.Node, int] | None:
    """(source, 0 or 1) when n is the first or second half of its source's last axis:
    `x[..., :D/2]`, `x[..., D/2:]`, `x.chunk(2, -1)[i]`, `x.split(D/2, -1)[i]`."""
    if not isinstance(n, fx.Node) or n.op != "call_function" or n.target is not operator.getitem:
        return None
    src = n.args[0]
    if _is(src, {torch.chunk, torch.split}, {"chunk", "split"}) and isinstance(n.args[1], int):
        parts, x = src.meta.get("val"), src.args[0]
        if not isinstance(x, fx.Node) or x not in dyn or not isinstance(parts, (tuple, list)) or len(parts) != 2:
            return None
        rank = x.meta["val"].dim()
        dim = src.kwargs.get("dim", src.args[2] if len(src.args) > 2 else 0)
        d = x.meta["val"].shape[-1]
        if dim % rank == rank - 1 and d % 2 == 0 and all(p.shape[-1] == d // 2 for p in parts):
            return _base(x), n.args[1]
        return None
    got = _last_slice(n, dyn)
    if got is None:
        return None
    src, s = got
    d = src.meta["val"].shape[-1]
    start, stop, step = s.indices(d)
    if d % 2 or step != 1:
        return None
    return {(0, d // 2): (_base(src), 0), (d // 2, d): (_base(src), 1)}.get((start, stop))


def _negated(n):
    """x for `-x`, `torch.neg(x)`, `x.neg()`, `x * -1`, `-1 * x`; else None."""
    if _is(n, _NEG_FNS, {"neg"}):
        return n.args[0]
    if _is(n, _MULS, {"mul"}) and len(n.args) == 2:
        a, b = n.args
        if b == -1 or b == -1.0:
            return a
        if a == -1 or a == -1.0:
            return b
    return None


def _scaled(n, dyn: set):
    """(activation, constant) of `a * c` or `c * a` with exactly one activation operand; else None."""
    if not _is(n, _MULS, {"mul"}) or len(n.args) != 2:
        return None
    a, b = n.args
    if isinstance(a, fx.Node) and a in dyn and not (isinstance(b, fx.Node) and b in dyn):
        return a, b
    if isinstance(b, fx.Node) and b in dyn and not (isinstance(a, fx.Node) and a in dyn):
        return b, a
    return None


def find_rope(gm: fx.GraphModule, dyn: set) -> tuple[dict[fx.Node, Rope], list[str]]:
    """Every rotary embedding of the graph as posters write it (Llama / GPT-NeoX: `_FORM`, cos and
    sin constants of the program's shapes: from an `inv_freq` buffer and the positions, or sliced
    from precomputed buffers), keyed by its output node; and one line per pattern that looks like
    rope but does not match (interleaved pairs, a rotate_half with other halves or signs, cos / sin
    that vary along an axis other than the positions, ...), naming the module."""
    found: dict[fx.Node, Rope] = {}
    problems: list[str] = []
    for n in gm.graph.nodes:
        if n not in dyn:
            continue
        where = lambda why, n=n: f"{_module_of(n)}: rotary embedding at {n.name}: {why}"  # noqa: E731
        if _is(n, {torch.view_as_complex}) or (
                (s := _last_slice(n, dyn)) is not None and s[1].step not in (None, 1)):
            if not any(q.startswith(f"{_module_of(n)}:") and _INTERLEAVED in q for q in problems):  # once a module
                problems.append(where(_INTERLEAVED))
            continue
        if not _is(n, CAT_FNS) or not n.args or not isinstance(n.args[0], (tuple, list)):
            continue
        parts = n.args[0]
        halves = [_half(_negated(p) if _negated(p) is not None else p, dyn) for p in parts]
        if not any(h is not None for h in halves):
            continue  # not a rotate_half-like concatenation: the walk says what it is
        rank = n.meta["val"].dim()
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
        negs = [_negated(p) is not None for p in parts]
        if (len(parts) != 2 or dim % rank != rank - 1 or None in halves or halves[0][0] is not halves[1][0]
                or [h[1] for h in halves] != [1, 0] or negs != [True, False]):
            problems.append(where(f"a concatenation of halves that is not rotate_half; the rope op computes {_FORM}"))
            continue
        try:
            found_one = _match_rope(n, halves[0][0], dyn)
        except ValueError as exc:
            problems.append(where(str(exc)))
            continue
        found[found_one.out] = found_one
    return found, problems


def _match_rope(cat: fx.Node, x: fx.Node, dyn: set) -> Rope:
    """The rest of x * cos + rotate_half(x) * sin around its rotate_half `cat` (ValueError: why not)."""
    users = list(cat.users)
    m2 = users[0] if len(users) == 1 else None
    sc = _scaled(m2, dyn) if m2 is not None else None
    if sc is None or sc[0] is not cat:
        raise ValueError(f"rotate_half(q) must be used once, multiplied by a constant sin; the rope op computes {_FORM}")
    sin = sc[1]
    users = list(m2.users)
    add = users[0] if len(users) == 1 else None
    if not _is(add, _ADDS, {"add"}) or len(add.args) != 2 or "alpha" in add.kwargs:
        raise ValueError(f"rotate_half(q) * sin must be added to q * cos; the rope op computes {_FORM}")
    m1 = add.args[1] if add.args[0] is m2 else add.args[0]
    sc = _scaled(m1, dyn)
    if sc is None or _base(sc[0]) is not x or len(m1.users) != 1:
        raise ValueError(f"rotate_half(q) * sin must be added to q * cos of the same q; the rope op computes {_FORM}")
    cos = sc[1]
    part = _last_slice(x, dyn)
    if part is not None and part[1].indices(part[0].meta["val"].shape[-1]) != (0, part[0].meta["val"].shape[-1], 1):
        raise ValueError("partial rotary (some of q's columns rotated, the rest passed through) is not in the op "
                         "set: rotate the whole head (rotary_pct 1.0)")
    inner = {cat, m2, m1}
    for p in cat.args[0]:
        inner.add(p)
        neg = _negated(p)
        if neg is not None:
            inner.add(neg)
    for h in list(inner):
        if h.op == "call_function" and h.target is operator.getitem and _is(h.args[0], {torch.chunk, torch.split},
                                                                             {"chunk", "split"}):
            inner.add(h.args[0])
    outside = [u.name for h in inner for u in h.users if u not in inner and u is not add]
    if outside:
        raise ValueError(f"its intermediate values are also read by {', '.join(sorted(outside))}; the rope op "
                         f"computes only {_FORM}")
    shape = list(add.meta["val"].shape)
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"q of rank {len(shape)}: the rope op takes [.., T, D] of rank 2..4")
    table, gain = _rope_table(cos, sin, shape)
    return Rope(x, add, table, gain, inner)


def _rope_table(cos, sin, shape: list[int]) -> tuple[np.ndarray, float]:
    """The int32 [T, D/2, 2] table of round(2^15 (cos, sin) / gain) from the model's own cos and sin
    broadcast to q's [.., T, D] (ValueError: not a rotate-half rotation along axis -2)."""
    vals = []
    for name, v in (("cos", cos), ("sin", sin)):
        if isinstance(v, fx.Node):
            v = v.meta.get("val")
        if not isinstance(v, (torch.Tensor, int, float)) or (isinstance(v, torch.Tensor) and not v.is_floating_point()):
            raise ValueError(f"{name} is not a float constant of the program (computed from the input?)")
        try:
            v = torch.as_tensor(v, dtype=torch.float64).expand(shape)
        except RuntimeError:
            raise ValueError(f"{name} of shape {list(torch.as_tensor(v).shape)} does not broadcast to q's {shape}") from None
        lead = v.reshape(-1, *shape[-2:])
        if not bool((lead == lead[:1]).all()):
            raise ValueError(f"{name} varies along an axis before the last two; the rope op's positions are "
                             f"the rows of [.., T, D] (rotate q after splitting the heads: [B, H, T, Dh])")
        v = lead[0]
        h = shape[-1] // 2
        if float((v[:, :h] - v[:, h:]).abs().max()) > 1e-6:
            raise ValueError(f"{name}[..., k] differs from {name}[..., k + D/2]: rotate-half pairs share one angle "
                             f"(cos = cat(freqs, freqs).cos()); is the rotation interleaved? {_INTERLEAVED}")
        vals.append(v[:, :h])
    cs = torch.stack(vals, dim=-1)  # [T, D/2, 2]
    if not bool(torch.isfinite(cs).all()):
        raise ValueError("cos or sin is not finite")
    gain = max(1.0, float(cs.abs().max()))
    return np.rint(cs.numpy() * (ROPE_ONE / gain)).astype(np.int32), gain


def rope(c: Ctx, r: Rope) -> None:
    """The rope op (0x15) for a matched rotary embedding: the table a weight, `off` 0 (a generation
    program's decode steps set it to the row's position), the requant from q's scale to the
    output's calibrated one (the table's gain included)."""
    n = r.out
    x = c.src(r.x)
    if x.kind != "native":
        raise c.refuse(n, "a rotary embedding of an image activation is not in the op set")
    s_y = c.b.scale(n.name)
    name = c.name(n)
    table = c.b.weight(f"{name}.cs", r.table)
    attrs = {"x_zp": x.zp, "off": 0, "requant": per_tensor(x.scale * r.gain / (ROPE_ONE * s_y))}
    c.vals[n] = Val(c.b.op(name, "rope", [x.name, table], attrs), s_y, "native")
