"""The export's view of a float model: a torch.fx graph traced with CONCRETE shapes, which nodes
depend on the unit input, calibration statistics, and the list of layers the op set cannot express.

Concrete-shape tracing: every node carries its value on the example input (`node.meta["val"]`: a
FakeTensor, shape and dtype only, for nodes that depend on the input; the real tensor for constants),
and `x.size()`, `x.shape`, `x.dim()`, `x.dtype`, `x.device` answer plain Python values. A program
has fixed shapes, so nothing is lost, and the usual transformer code traces as written: `B, T, C =
x.size()`, `self.mask[:, :, :T, :T]`, `torch.arange(T, device=x.device)`, `math.sqrt(q.size(-1))`
(plain `fx.symbolic_trace` refuses the last three). Tensors computed from shapes and module
attributes alone are constants of the graph (`static`).

Grouped-query attention (`expand_kv_heads`): k and v projected to fewer heads and expanded to the
query heads (`repeat_kv`, `repeat_interleave`, SDPA's `enable_gqa`) are rewritten in the traced
graph, before calibration, into a projection with its rows duplicated per query head; the
expansion vanishes.

The model is the poster's OWN code, run locally; workers only ever receive the exported data.
Adapter code (torch); imported by gpumesh.node.runtime.export.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from gpumesh.node.runtime.files import RuntimeFault


class ExportError(RuntimeFault):
    """The model uses something the v1 op set cannot express (one line: the layer and the fix).
    Exit code 5, as `program check` when it lists such layers: the same verdict on the same model."""

    exit_code = 5


def is_rmsnorm(m: nn.Module) -> bool:
    """nn.RMSNorm, or a model's own RMSNorm class (Llama-style: a `weight` [D] and an eps)."""
    return isinstance(m, getattr(nn, "RMSNorm", ())) or (
        type(m).__name__.lower().endswith("rmsnorm") and m._parameters.get("weight") is not None)


class _ConcreteProxy(fx.Proxy):
    """A proxy whose shape questions get the example's answers (plain ints, torch.Size, dtype)."""

    def _v(self):
        return self.node.meta["val"]

    @property
    def shape(self):
        return self._v().shape

    @property
    def ndim(self):
        return self._v().dim()

    @property
    def dtype(self):
        return self._v().dtype

    @property
    def device(self):
        return self._v().device

    def size(self, dim=None):
        v = self._v()
        return v.size() if dim is None else v.size(dim)

    def dim(self):
        return self._v().dim()

    def numel(self):
        return self._v().numel()

    def __len__(self):
        return len(self._v())

    def __iter__(self):
        v = self._v()
        if isinstance(v, (tuple, list)):
            return iter([self[i] for i in range(len(v))])
        return super().__iter__()


class _Tracer(fx.Tracer):
    def __init__(self, example: torch.Tensor) -> None:
        super().__init__()
        # nodes that depend on the input are evaluated on fake tensors (shapes and dtypes, no data:
        # a large model's activations at the unit batch never exist here); constants for real
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.example = self.fake.from_tensor(example)
        self._evaluating = False  # computing a node's value: module calls run as they are

    def call_module(self, m, forward, args, kwargs):
        if self._evaluating:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_rmsnorm(m) or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        p = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if kind != "output":
            self._evaluating = True
            try:
                p.node.meta["val"] = self._evaluate(p.node)
            finally:
                self._evaluating = False
        return p

    def _evaluate(self, n: fx.Node):
        return _evaluate(self.root, n, self.fake, self.example)


def _evaluate(root: nn.Module, n: fx.Node, fake: FakeTensorMode, example):
    """n's example value: on fake tensors when an argument is one, else for real."""

    def val(a):
        if isinstance(a, fx.Node):
            if "val" not in a.meta:  # get_attr nodes made by create_arg (parameters, constants)
                a.meta["val"] = _attr(root, a.target) if a.op == "get_attr" else None
            return a.meta["val"]
        return a

    args = fx.node.map_aggregate(n.args, val)
    kwargs = fx.node.map_aggregate(n.kwargs, val)
    fakes: list[bool] = []
    fx.node.map_aggregate((args, kwargs), lambda a: fakes.append(isinstance(a, FakeTensor)))
    with torch.no_grad(), (fake if any(fakes) else contextlib.nullcontext()):
        if n.op == "placeholder":
            return example
        if n.op == "get_attr":
            return _attr(root, n.target)
        if n.op == "call_module":
            return root.get_submodule(n.target)(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
    raise ExportError(f"unexpected fx node {n.op}")


def _attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The model's fx graph at the example's shapes, each node with its example value."""
    tracer = _Tracer(example)
    try:
        graph = tracer.trace(model)
    except ExportError:
        raise
    except Exception as exc:  # the poster's code: report what torch.fx said, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.fx cannot trace the model ({type(exc).__name__}: {first}); the export "
                          f"needs a forward without data-dependent Python control flow") from None
    return fx.GraphModule(tracer.root, graph)


def dynamic_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value depends on the unit input; the others are constants of the program."""
    dyn: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder" or any(a in dyn for a in n.all_input_nodes):
            dyn.add(n)
    return dyn


# ---------------------------------------------------------------------------------------------
# Calibration


def _sdpa_args(n: fx.Node, vals: dict):
    """(q, k, v, attn_mask, is_causal, scale) of a scaled_dot_product_attention node."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    got = dict(zip(names, n.args, strict=False)) | dict(n.kwargs)
    get = lambda k, d=None: vals.get(got[k], got[k]) if isinstance(got.get(k), fx.Node) else got.get(k, d)  # noqa: E731
    return get("query"), get("key"), get("value"), get("attn_mask"), bool(get("is_causal", False)), get("scale")


#: An additive mask value at or below this masks out (-inf, or transformers' `finfo(dtype).min`):
#: exp of it underflows to 0 in float32 as -inf does (masked_fill's rule too).
MASKED = -1e4


def kept(mask: torch.Tensor) -> torch.Tensor:
    """Where an additive float mask lets attention through (above MASKED)."""
    return mask > MASKED


def attention_parts(q, k, v, mask, causal: bool, scale) -> dict[str, torch.Tensor]:
    """The float intermediates of softmax(q k^T * scale + mask) v that the export quantizes:
    `scores` (q k^T * scale, where the mask keeps it) and `context`."""
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    t, L = s.shape[-2], s.shape[-1]
    keep = torch.ones(t, L, dtype=torch.bool).tril() if causal else None
    if mask is not None:
        m = mask if mask.dtype == torch.bool else kept(mask)
        keep = m if keep is None else keep & m
    p = torch.softmax(s if keep is None else s.masked_fill(~keep, float("-inf")), dim=-1)
    return {"scores": s if keep is None else s.masked_fill(~keep, 0.0), "context": p @ v}


def mha_parts(m: nn.MultiheadAttention, x: torch.Tensor, mask, causal: bool) -> dict[str, torch.Tensor]:
    """q, k, v (heads split: [B, H, T, Dh]), scores, context ([B, H, T, Dh]) of a batch-first
    self-attention nn.MultiheadAttention on x [B, T, D]."""
    b, t, d = x.shape
    h = m.num_heads
    q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).split(d, dim=-1)
    heads = lambda y: y.reshape(b, t, h, d // h).transpose(1, 2)  # noqa: E731
    parts = attention_parts(heads(q), heads(k), heads(v), mask, causal, None)
    return {"q": heads(q), "k": heads(k), "v": heads(v), **parts}


def _maxabs(v: torch.Tensor, clip: float | None) -> float:
    """The calibration statistic of one tensor: max |v| over finite values, or its `clip`
    percentile of |v| (a deterministic strided sample of at most 2^20 values)."""
    v = v.detach()
    if v.numel() == 0:
        return 0.0
    if clip is None:  # the common case in one pass and no copy: the extremes, exact in any float dtype
        lo, hi = torch.aminmax(v)
        m = max(-float(lo), float(hi))
        if math.isfinite(m):
            return m
    a = v.abs().double().reshape(-1)
    a = a[torch.isfinite(a)]
    if a.numel() == 0:
        return 0.0
    if clip is None:
        return float(a.max())
    step = max(1, a.numel() >> 20)
    return float(np.percentile(a[::step].numpy(), clip))


def calibrate(gm: fx.GraphModule, batches: Iterable[torch.Tensor], clip: float | None = None) -> dict[str, float]:
    """Per node name (and `name:part` for the inside of attention), the largest statistic over
    the calibration batches (_maxabs)."""
    stats: dict[str, float] = {}
    mods = dict(gm.named_modules())

    def put(key: str, v: torch.Tensor) -> None:
        stats[key] = max(stats.get(key, 0.0), _maxabs(v, clip))

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                put(n.name, v)
            elif isinstance(v, tuple) and v and isinstance(v[0], torch.Tensor):
                put(n.name, v[0])
            if n.op == "call_function" and n.target is F.scaled_dot_product_attention:
                parts = attention_parts(*_sdpa_args(n, self.env))
                put(f"{n.name}:scores", parts["scores"])
            elif n.op == "call_module" and isinstance(mods[n.target], nn.MultiheadAttention):
                x = self.env[n.args[0]]
                mask = n.kwargs.get("attn_mask")
                mask = self.env.get(mask, mask) if isinstance(mask, fx.Node) else mask
                for k, t in mha_parts(mods[n.target], x, mask, bool(n.kwargs.get("is_causal", False))).items():
                    put(f"{n.name}:{k}", t)
            return v

    with torch.no_grad():
        for x in batches:
            Rec(gm).run(x)
    return stats


# ---------------------------------------------------------------------------------------------
# What the op set cannot express, with the fix (listed all at once by `gpumesh program check`)

#: Elementwise activations exported as a 256-entry lookup table (the lut op).
LUT_MODULES = (nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Hardsigmoid,
               nn.Mish, nn.Softplus, nn.ReLU6, nn.Hardtanh, nn.GELU)
LUT_FUNCTIONS = {F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu,
                 F.hardswish, F.mish, F.softplus, F.relu6}
LUT_METHODS = {"sigmoid", "tanh"}
SUPPORTED_MODULES = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                     nn.Flatten, nn.Dropout, nn.Identity, nn.Embedding, nn.LayerNorm, nn.MultiheadAttention,
                     nn.Softmax, *LUT_MODULES)

_HINTS = {
    "Conv1d": "use Conv2d with a 1-high kernel",
    "BatchNorm1d": "fold it into the Linear before it (w * g, (b - mean) * g + beta) before exporting",
    "LSTM": "recurrent layers are not in the op set; a transformer block exports",
    "GRU": "recurrent layers are not in the op set; a transformer block exports",
    "RNN": "recurrent layers are not in the op set; a transformer block exports",
    "AvgPool2d": "only a global AdaptiveAvgPool2d(1) is in the op set",
    "GroupNorm": "use LayerNorm over the last axis",
    "TransformerEncoderLayer": "write the block with Linear, LayerNorm, attention and an activation "
                               "(its fused fast path cannot be traced)",
    "TransformerDecoderLayer": "write the block with Linear, LayerNorm, attention and an activation",
    "Upsample": "not in the op set",
}


def module_problems(model: nn.Module) -> list[str]:
    """One line per leaf module of a type the export cannot express: `name (nn.Type): hint`."""
    out = []
    tracer = fx.Tracer()
    seen_inside: set[str] = set()
    for name, m in model.named_modules():
        if not name or any(name.startswith(p + ".") for p in seen_inside):
            continue
        if is_rmsnorm(m) or isinstance(m, nn.MultiheadAttention):
            seen_inside.add(name)
            continue
        if not tracer.is_leaf_module(m, name) or isinstance(m, SUPPORTED_MODULES):
            continue
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            continue
        kind = type(m).__name__
        out.append(f"{name} (nn.{kind}): {_HINTS.get(kind, 'not in the op set (docs/protocol.md 2.2)')}")
    return out


def describe(n: fx.Node, mods: dict) -> str:
    """A node as a person knows it: `layer (nn.Type)` for a module call, else the function."""
    if n.op == "call_module":
        return f"{n.target} (nn.{type(mods[n.target]).__name__})"
    if n.op == "call_function":
        fn = getattr(n.target, "__name__", str(n.target))
        return f"{n.name} ({'x ' + {'add': '+', 'mul': '*', 'sub': '-', 'truediv': '/'}.get(fn, fn) + ' y' if n.target in _OPS else fn + '()'})"
    if n.op == "call_method":
        return f"{n.name} (.{n.target}())"
    return n.name


_OPS = {operator.add, operator.mul, operator.sub, operator.truediv, operator.matmul}


# ---------------------------------------------------------------------------------------------
# SmoothQuant-style scaling at the norms


def smooth_norms(gm: fx.GraphModule, batches: Iterable[torch.Tensor], alpha: float) -> int:
    """Move per-channel range from each norm's output into the Linears that read it (SmoothQuant,
    Xiao et al. 2023, where it costs nothing: the norm's gamma and beta absorb 1/s): channel j of
    the output is divided by s_j = a_j^alpha / w_j^(1 - alpha) (a_j its calibrated max |y_j|, w_j
    the largest |W[:, j]| over the reading Linears, or a self-attention nn.MultiheadAttention's
    in_proj) and column j of every reader's weight multiplied by s_j. The float function is
    unchanged; the per-tensor int8 activation then spends its 256 levels on channels of similar
    range. Edits gm's modules in place (the caller's copy); returns how many norms were smoothed.
    Off by default: on the byte GPTs it measured no better than none (docs/protocol.md 2.6)."""
    mods = dict(gm.named_modules())
    norms = {}
    for n in gm.graph.nodes:
        m = mods.get(n.target) if n.op == "call_module" else None
        if not (isinstance(m, nn.LayerNorm) or (m is not None and is_rmsnorm(m))) or m.weight is None:
            continue
        readers = [_reader_weight(mods.get(u.target)) if u.op == "call_module" else None for u in n.users]
        if readers and all(r is not None for r in readers):
            norms[n] = (m, readers)
    if not norms:
        return 0
    amax: dict[fx.Node, torch.Tensor] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if n in norms:
                a = v.detach().abs().reshape(-1, v.shape[-1]).amax(0)
                amax[n] = a if n not in amax else torch.maximum(amax[n], a)
            return v

    with torch.no_grad():
        for x in batches:
            Rec(gm).run(x)
        for n, (m, readers) in norms.items():
            w = torch.stack([r.detach().abs().amax(0) for r in readers]).amax(0)
            s = (amax[n].clamp_min(1e-5) ** alpha / w.clamp_min(1e-5) ** (1 - alpha)).clamp(1e-2, 1e2)
            m.weight.div_(s)
            if getattr(m, "bias", None) is not None:
                m.bias.div_(s)
            for r in readers:
                r.mul_(s)
    return len(norms)


def _reader_weight(m) -> torch.Tensor | None:
    """The [N, D] weight whose columns read a norm's output: a Linear's, or the packed q/k/v
    projection of a self-attention nn.MultiheadAttention."""
    if isinstance(m, nn.Linear):
        return m.weight
    if isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim:
        return m.in_proj_weight
    return None


# ---------------------------------------------------------------------------------------------
# Grouped-query attention: k and v expanded from Hkv to H heads


_RESHAPES = {"view", "reshape"}
_PER_HEAD_FNS = {operator.mul, torch.mul, operator.add, torch.add, operator.sub, torch.sub, operator.truediv,
                 torch.div, operator.neg, torch.neg}
_PER_HEAD_METHODS = {"mul", "add", "sub", "div", "neg"}
_SAME = {"contiguous", "float", "clone", "detach", "to", "type_as"}
_GQA_FIX = ("the export duplicates the k / v projection's rows per query head when k and v reach the expansion "
            "through per-head ops only (a Linear, a view splitting its last axis into heads, transposes, rope)")


def is_call(n, fns: set, methods: set = frozenset()) -> bool:
    """n is a call of one of `fns` or of one of the tensor `methods`."""
    return isinstance(n, fx.Node) and ((n.op == "call_function" and n.target in fns)
                                       or (n.op == "call_method" and n.target in methods))


_is = is_call


def permutation(n: fx.Node, rank: int) -> list[int]:
    """The permutation of a transpose / permute node."""
    if n.target in ("transpose", torch.transpose):
        d0, d1 = (a % rank for a in n.args[1:3])
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return perm
    dims = n.args[1:] if n.op == "call_method" else n.args[1]
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return [d % rank for d in dims]


def _shape(n) -> list[int] | None:
    v = n.meta.get("val") if isinstance(n, fx.Node) else None
    return list(v.shape) if isinstance(v, torch.Tensor) else None


def _inserted_axis(u: fx.Node) -> int | None:
    """j when u is `x[:, :, None]`-like (one None, otherwise whole slices and at most one Ellipsis)
    or `x.unsqueeze(j)`: a size-1 axis inserted at j of the output."""
    x = u.args[0] if u.args else None
    rank = len(_shape(x) or [])
    if _is(u, {torch.unsqueeze}, {"unsqueeze"}):
        d = u.kwargs.get("dim", u.args[1] if len(u.args) > 1 else None)
        return d % (rank + 1) if isinstance(d, int) else None
    if not (u.op == "call_function" and u.target is operator.getitem and isinstance(x, fx.Node)):
        return None
    idx = u.args[1] if isinstance(u.args[1], tuple) else (u.args[1],)
    if sum(i is None for i in idx) != 1 or sum(i is Ellipsis for i in idx) > 1 or not all(
            i is None or i is Ellipsis or (isinstance(i, slice) and i == slice(None)) for i in idx):
        return None
    if Ellipsis in idx:
        at = idx.index(Ellipsis)
        idx = idx[:at] + (slice(None),) * (rank - (len(idx) - 2)) + idx[at + 1 :]
    return idx.index(None)


def _expansions(gm: fx.GraphModule) -> list[tuple]:
    """Every expansion of Hkv heads to H in the graph, as (x, head axis of x, source head of each
    of the H heads, the node whose uses become x's (None: an SDPA's enable_gqa), nodes to erase)."""
    out = []
    for n in gm.graph.nodes:
        shape = _shape(n)
        if _is(n, {torch.reshape}, _RESHAPES | {"flatten"}) and _is(n.args[0], set(), {"expand"}):
            e = n.args[0]
            u = e.args[0]
            j = _inserted_axis(u) if isinstance(u, fx.Node) and len(e.users) == 1 and len(u.users) == 1 else None
            x = u.args[0] if j is not None else None
            xs, es = _shape(x), _shape(e)
            if j is None or xs is None or es is None or shape is None or len(shape) != len(xs):
                continue
            r = es[j]
            if es != xs[:j] + [r] + xs[j:]:
                continue
            if j > 0 and shape == xs[: j - 1] + [xs[j - 1] * r] + xs[j:]:  # (kv head, copy) merged: h // r
                out.append((x, j - 1, [h // r for h in range(xs[j - 1] * r)], n, [n, e, u]))
            elif j < len(xs) and shape == xs[:j] + [r * xs[j]] + xs[j + 1 :]:  # (copy, kv head): h % Hkv
                out.append((x, j, [h % xs[j] for h in range(r * xs[j])], n, [n, e, u]))
        elif _is(n, {torch.repeat_interleave}, {"repeat_interleave"}):
            got = dict(zip(("input", "repeats", "dim"), n.args, strict=False)) | dict(n.kwargs)
            x, r, d = got.get("input"), got.get("repeats"), got.get("dim")
            xs = _shape(x)
            if xs is not None and isinstance(r, int) and isinstance(d, int):
                out.append((x, d % len(xs), [h // r for h in range(xs[d] * r)], n, [n]))
        elif n.op == "call_function" and n.target is F.scaled_dot_product_attention and n.kwargs.get("enable_gqa"):
            q, k, v = (n.kwargs.get(a, n.args[i] if len(n.args) > i else None) for i, a in enumerate(("query", "key", "value")))
            qs, ks = _shape(q), _shape(k)
            if qs is None or ks is None or len(ks) < 3 or qs[-3] % ks[-3]:
                continue
            r = qs[-3] // ks[-3]
            for x in (k, v):
                out.append((x, len(ks) - 3, [h // r for h in range(ks[-3] * r)], None, [n]))
    return out


def _head_chain(x: fx.Node, axis: int, mods: dict) -> tuple[dict, fx.Node, fx.Node]:
    """The per-head nodes from a Linear to x (node -> its head axis, None before the heads view),
    the heads view and the chain's root (a Linear call, or a part of a split Linear's output)
    (ValueError: why not)."""
    seen: dict[fx.Node, int | None] = {}
    views: set[fx.Node] = set()
    roots: set[fx.Node] = set()
    todo = [(x, axis)]
    while todo:
        n, ax = todo.pop()
        if not isinstance(n, fx.Node):
            continue
        if n in seen:
            if seen[n] != ax:
                raise ValueError(f"{n.name} is read with its heads on two different axes")
            continue
        seen[n] = ax
        v = n.meta.get("val")
        shape = list((v[0] if isinstance(v, (tuple, list)) and v else v).shape)
        rank = len(shape)
        src = n.args[0] if n.args else None
        if _is_constant(n):
            raise ValueError(f"{n.name} is a constant")
        if _is(n, {torch.reshape}, _RESHAPES):
            ins = _shape(src) or []
            if not (ax == rank - 2 and ins[:-1] == shape[:-2] and shape[-2] * shape[-1] == ins[-1]):
                raise ValueError(f"{n.name} (.{n.target if n.op == 'call_method' else 'reshape'}()) reshapes the "
                                 f"heads other than by splitting a Linear's last axis")
            views.add(n)
            while _is(src, set(), _SAME):
                seen[src] = None
                src = src.args[0]
            roots.add(src)
            continue
        if _is(n, {torch.transpose, torch.permute}, {"transpose", "permute"}):
            perm = permutation(n, rank)
            todo.append((src, perm[ax]))
            continue
        if _is(n, set(), _SAME):
            todo.append((src, ax))
            continue
        if _is(n, _PER_HEAD_FNS, _PER_HEAD_METHODS):
            for a in (*n.args, *n.kwargs.values()):
                if not isinstance(a, fx.Node) or _shape(a) is None:
                    continue
                cs = _shape(a)
                if not _is_constant(a) and cs == shape:
                    todo.append((a, ax))
                elif not _is_constant(a) or (len(cs) - (rank - ax) >= 0 and cs[len(cs) - (rank - ax)] != 1):
                    raise ValueError(f"{n.name} combines the heads with a value that differs per head")
            continue
        if n.op == "call_function" and n.target is operator.getitem:
            if _is(src, {torch.split, torch.chunk}, {"split", "chunk"}):
                todo.append((src, ax))
                continue
            idx = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
            if Ellipsis in idx:
                at = idx.index(Ellipsis)
                idx = idx[:at] + (slice(None),) * (rank - len(idx) + 1) + idx[at + 1 :]
            if len(idx) <= rank and all(isinstance(i, slice) for i in idx) and (
                    ax >= len(idx) or idx[ax] == slice(None)):
                todo.append((src, ax))
                continue
        elif _is(n, {torch.split, torch.chunk}, {"split", "chunk"}):
            d = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
            xs = _shape(src) or []
            if xs and d % len(xs) != ax:
                todo.append((src, ax))
                continue
        elif _is(n, {torch.cat, torch.concat}):
            d = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
            if d % rank != ax:
                todo.extend((p, ax) for p in n.args[0])
                continue
        elif n.op == "call_module" and (is_rmsnorm(mods[n.target]) or isinstance(mods[n.target], nn.LayerNorm)) \
                and ax != rank - 1:
            todo.append((src, ax))
            continue
        raise ValueError(f"{describe(n, mods)} between the projection and the expansion is not a per-head op")
    if len(roots) != 1 or len(views) != 1:
        raise ValueError("k or v comes from more than one projection" if roots else "no projection found")
    return seen, views.pop(), roots.pop()


def _is_constant(n: fx.Node) -> bool:
    """Whether n's value does not depend on the unit input (the trace evaluated it for real)."""
    v = n.meta.get("val")
    return not any(isinstance(t, FakeTensor) for t in (v if isinstance(v, (tuple, list)) else [v]))


def _projection(root: fx.Node, mods: dict) -> tuple[fx.Node, nn.Linear, int, int] | None:
    """(the Linear's node, its module, the rows lo, hi) of a Linear call or a part of a split / chunk
    of one along its last axis."""
    if root.op == "call_module" and isinstance(mods[root.target], nn.Linear):
        return root, mods[root.target], 0, mods[root.target].out_features
    if root.op == "call_function" and root.target is operator.getitem and _is(
            root.args[0], {torch.split, torch.chunk}, {"split", "chunk"}):
        s = root.args[0]
        lin = s.args[0]
        ls = _shape(lin)
        d = s.kwargs.get("dim", s.args[2] if len(s.args) > 2 else 0)
        if isinstance(lin, fx.Node) and lin.op == "call_module" and isinstance(mods[lin.target], nn.Linear) and \
                d % len(ls) == len(ls) - 1:
            sizes = [p.shape[-1] for p in s.meta["val"]]
            i = root.args[1]
            return lin, mods[lin.target], sum(sizes[:i]), sum(sizes[: i + 1])
    return None


def expand_kv_heads(gm: fx.GraphModule) -> list[str]:
    """Grouped-query / multi-query attention (k and v projected to Hkv < H heads, then expanded to
    H by transformers' `repeat_kv` (`x[:, :, None].expand(..).reshape(..)`), `repeat_interleave`
    or SDPA's `enable_gqa`): the projection's rows are duplicated so that it produces the H heads
    itself (head h reads kv head h // n_rep), and the expansion vanishes. Per-head ops between the
    projection and the expansion (the heads view, transposes, rope, a per-head norm) then run on H
    heads: they act on each head alone, so the values are those of the expanded tensor, exactly.
    Rewrites gm in place (its own graph; the model's modules are not touched) and re-evaluates the
    example values; returns one line per expansion it cannot lower (left as it is)."""
    mods = dict(gm.named_modules())
    problems: list[str] = []
    plans: dict[fx.Node, list] = {}  # by the expansion's node (an SDPA's k and v together)
    failed: set[fx.Node] = set()
    for x, axis, src_heads, repl, erase in _expansions(gm):
        try:
            chain, view, root = _head_chain(x, axis, mods)
            proj = _projection(root, mods)
            if proj is None:
                raise ValueError(f"{describe(root, mods)}: k and v must come from an nn.Linear (or a part of "
                                 f"its output split along the last axis)")
            outside = sorted(u.name for c in chain for u in c.users if u not in chain and u not in erase)
            if outside:
                raise ValueError(f"the heads before the expansion are also read by {', '.join(outside)}")
        except ValueError as exc:
            stack = list((erase[0].meta.get("nn_module_stack") or {}).values())
            at = f"{stack[-1][0]} ({getattr(stack[-1][1], '__name__', stack[-1][1])}) at " if stack else ""
            problems.append(f"{at}{describe(erase[0], mods)}: grouped-query attention: {exc}; {_GQA_FIX}")
            failed.add(erase[0])
            continue
        plans.setdefault(erase[0], []).append((x, src_heads, repl, erase, chain, view, root, proj))
    targets = {n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
    gone: set[fx.Node] = set()
    for key, group in plans.items():
        if key in failed:
            continue
        for x, src_heads, repl, erase, chain, view, root, (lin, m, lo, hi) in group:
            vs = _shape(view)
            dh = vs[-1]
            rows = torch.tensor([lo + g * dh + j for g in src_heads for j in range(dh)])
            new = nn.Linear(m.in_features, len(rows), bias=m.bias is not None)
            with torch.no_grad():
                new.weight.copy_(m.weight.detach()[rows])
                if m.bias is not None:
                    new.bias.copy_(m.bias.detach()[rows])
            target = f"{lin.target}_heads" if (lo, hi) == (0, m.out_features) else f"{lin.target}_rows{lo}_{hi}"
            if any(target.startswith(t + ".") for t in targets):  # a parent is the model's own module
                target = target.replace(".", "_")
            while target in targets:
                target += "_"
            targets.add(target)
            gm.add_submodule(target, new)
            with gm.graph.inserting_after(root):
                node = gm.graph.call_module(target, (lin.args[0],))
            node.meta = {k: v for k, v in root.meta.items() if k != "val"}
            root.replace_all_uses_with(node, delete_user_cb=lambda u, chain=chain: u in chain)
            view.args = (view.args[0], tuple([*vs[:-2], len(src_heads), dh]))
            if repl is not None:
                repl.replace_all_uses_with(x)
                for e in erase:
                    gm.graph.erase_node(e)
            else:
                key.kwargs = {k: v for k, v in key.kwargs.items() if k != "enable_gqa"}
            for n in (root, lin):
                if not n.users and n not in gone:
                    gm.graph.erase_node(n)
                    gone.add(n)
    if plans.keys() - failed:
        gm.graph.lint()
        gm.recompile()
        example = next(n for n in gm.graph.nodes if n.op == "placeholder").meta["val"]
        dyn = dynamic_nodes(gm)
        for n in gm.graph.nodes:
            if n in dyn and n.op not in ("placeholder", "output"):
                n.meta["val"] = _evaluate(gm, n, example.fake_mode, example)
    return problems
