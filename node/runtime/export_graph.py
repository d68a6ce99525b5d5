"""The export's view of a float model: a torch.fx graph traced with CONCRETE shapes, which nodes
depend on the unit input, calibration statistics, and the list of layers the op set cannot express.

Concrete-shape tracing: every node carries its value on the example input (`node.meta["val"]`: a
FakeTensor, shape and dtype only, for nodes that depend on the input; the real tensor for constants),
and `x.size()`, `x.shape`, `x.dim()`, `x.dtype`, `x.device` answer plain Python values. A program
has fixed shapes, so nothing is lost, and the usual transformer code traces as written: `B, T, C =
x.size()`, `self.mask[:, :, :T, :T]`, `torch.arange(T, device=x.device)`, `math.sqrt(q.size(-1))`
(plain `fx.symbolic_trace` refuses the last three). Tensors computed from shapes and module
attributes alone are constants of the graph (`static`).

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
    """The model uses something the v1 op set cannot express (one line: the layer and the fix)."""


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
        def val(a):
            if isinstance(a, fx.Node):
                if "val" not in a.meta:  # get_attr nodes made by create_arg (parameters, constants)
                    a.meta["val"] = _attr(self.root, a.target) if a.op == "get_attr" else None
                return a.meta["val"]
            return a

        args = fx.node.map_aggregate(n.args, val)
        kwargs = fx.node.map_aggregate(n.kwargs, val)
        fakes: list[bool] = []
        fx.node.map_aggregate((args, kwargs), lambda a: fakes.append(isinstance(a, FakeTensor)))
        with torch.no_grad(), (self.fake if any(fakes) else contextlib.nullcontext()):
            if n.op == "placeholder":
                return self.example
            if n.op == "get_attr":
                return _attr(self.root, n.target)
            if n.op == "call_module":
                return self.root.get_submodule(n.target)(*args, **kwargs)
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


def attention_parts(q, k, v, mask, causal: bool, scale) -> dict[str, torch.Tensor]:
    """The float intermediates of softmax(q k^T * scale + mask) v that the export quantizes:
    `scores` (q k^T * scale, where the mask keeps it) and `context`."""
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    t, L = s.shape[-2], s.shape[-1]
    keep = torch.ones(t, L, dtype=torch.bool).tril() if causal else None
    if mask is not None:
        m = mask if mask.dtype == torch.bool else torch.isfinite(mask)
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
