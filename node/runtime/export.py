"""Export a float nn.Module to an int8 program (post-training quantization, docs/protocol.md 2.6).

The model is traced with torch.fx at the program's shapes (export_graph: concrete shapes, so the
usual transformer code traces as written), calibrated on the poster's samples in batches of the
unit batch, and walked node by node into program ops:

- vision: Conv2d (groups 1, dilation 1, zero padding) with a following BatchNorm2d folded and a
  following ReLU fused into the requant clamp; Linear (+ fused ReLU); ReLU; MaxPool2d;
  AdaptiveAvgPool2d(1); Flatten (any start_dim); residual add (+ fused ReLU); Dropout/Identity.
- transformers (export_ops): token ids in [0, 256) as the int8 unit input, nn.Embedding (gather),
  learned positions (an Embedding of constant ids: a gather through committed position ids),
  rotary positions (`q * cos + rotate_half(q) * sin`, Llama / GPT-NeoX: the rope op with the
  model's own cos and sin as its Q15 table; export_ops.find_rope) and other constants, LayerNorm / RMSNorm, GELU / SiLU / sigmoid / tanh and other elementwise
  activations as lookup tables, elementwise products (SwiGLU), `@` of two activations, softmax
  (causal through a lower-triangular mask or is_causal), F.scaled_dot_product_attention,
  batch-first self-attention nn.MultiheadAttention, grouped-query / multi-query attention (k and v
  expanded from fewer heads: the projection's rows duplicated per query head,
  export_graph.expand_kv_heads), view / reshape / transpose / permute, scaling
  by a constant (folded into the scale), the LM head (int32 logits, argmax for the next token).

Layout: an image input is int8 in the model's own layout (NCHW), then channels-last; everything
else keeps torch's layout. Reductions above the one-step bounds (docs/protocol.md 3.4) are lowered
into the chunked ops of 5.7.7 (`chunk_reductions`), bit for bit the unchunked op's result.

Anything else is refused in one line naming the layer (`name (nn.Type)`) and the fix;
`unsupported(...)` lists every such layer at once (`gpumesh program check`).

The model is the poster's OWN code, run locally; workers only ever receive the exported data.
Adapter code (torch); used by the CLI and the examples.
"""

from __future__ import annotations

import copy
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from gpumesh.client.core.ops.rules import MAX_STEP_ELEMENTS, MAX_STEP_LEAVES, step_reads
from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    Requant,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)
from gpumesh.client.core.program import Program
from gpumesh.node.runtime import export_ops as T
from gpumesh.node.runtime.export_graph import (
    LUT_FUNCTIONS,
    LUT_METHODS,
    LUT_MODULES,
    ExportError,
    calibrate,
    describe,
    dynamic_nodes,
    expand_kv_heads,
    is_rmsnorm,
    kept,
    module_problems,
    permutation,
    smooth_norms,
    trace,
)
from gpumesh.node.runtime.export_ops import Builder, Ctx, Val
from gpumesh.node.runtime.quant import (
    add_multipliers,
    qp_table,
    quantize_bias,
    quantize_weight_per_channel,
    requant_multipliers,
)

__all__ = ["ExportError", "chunk_reductions", "export_json", "export_model", "unsupported"]

_RELU_FNS = {F.relu, torch.relu}
_ADD_FNS = {operator.add, torch.add}
_SUB_FNS = {operator.sub, torch.sub}
_MUL_FNS = {operator.mul, torch.mul}
_DIV_FNS = {operator.truediv, torch.div}
_MATMUL_FNS = {operator.matmul, torch.matmul, torch.bmm}
_SOFTMAX_FNS = {F.softmax, torch.softmax}
_FLATTEN_FNS = {torch.flatten}
_RESHAPE_METHODS = {"view", "reshape"}
_SAME_METHODS = T.SAME_METHODS  # values unchanged (float)
_HINT_SOFTMAX_OUT = "a softmax on the output: drop it, the argmax does not need it (same class)"


def _single_user(n: fx.Node) -> fx.Node | None:
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def _is_relu(n: fx.Node | None, mods: dict) -> bool:
    if n is None:
        return False
    return (n.op == "call_module" and isinstance(mods[n.target], nn.ReLU)) or (
        n.op == "call_function" and n.target in _RELU_FNS) or (n.op == "call_method" and n.target == "relu")


def _fn(n: fx.Node, fns: set, methods: set | tuple = ()) -> bool:
    return (n.op == "call_function" and n.target in fns) or (n.op == "call_method" and n.target in methods)


def _lut_fn(n: fx.Node, mods: dict):
    """The float function of an elementwise activation node (module, function or method), or None."""
    if n.op == "call_module" and isinstance(mods[n.target], LUT_MODULES):
        return mods[n.target]
    extra = dict(n.kwargs)
    if n.op == "call_function" and n.target in LUT_FUNCTIONS:
        return lambda x: n.target(x, *n.args[1:], **extra)
    if n.op == "call_method" and n.target in LUT_METHODS:
        return lambda x: getattr(x, n.target)(*n.args[1:], **extra)
    return None


def _dim_arg(n: fx.Node, pos: int, default):
    return n.kwargs.get("dim", n.args[pos] if len(n.args) > pos else default)


def _batches(calib: torch.Tensor, bsz: int):
    """Calibration in batches of exactly the unit batch (the graph's shapes are the program's); the
    last one topped up from the start (a repeat changes no maximum)."""
    for i in range(0, len(calib), bsz):
        x = calib[i : i + bsz]
        if len(x) < bsz:
            x = torch.cat([x, calib[: bsz - len(x)].repeat(-(-bsz // max(1, len(calib))), *[1] * (x.dim() - 1))[: bsz - len(x)]])
        yield x


def _example(calib: torch.Tensor, bsz: int) -> torch.Tensor:
    return next(_batches(calib, bsz))


def export_model(model: nn.Module, calib: torch.Tensor, unit_batch: int, argmax: bool = True,
                 meta: dict | None = None, clip: float | None = None,
                 smooth: float | None = None) -> tuple[Program, dict[str, np.ndarray]]:
    """Quantize `model` (float, eval mode) into a program whose unit input is int8
    [unit_batch, *calib.shape[1:]] (float samples), or int8 token ids - 128 (integer samples).
    `clip`: the activation statistic, None for the calibrated max, else that percentile of |x|.
    `smooth`: the alpha of the scaling at the norms (export_graph.smooth_norms), None for none.
    The defaults (max, no smoothing) measured as good as any setting (docs/protocol.md 2.6).
    Returns the validated Program and its weight arrays."""
    obj, arrays = export_json(model, calib, unit_batch, argmax, meta, clip, smooth)
    return Program.from_json(chunk_reductions(obj)), arrays


def export_json(model: nn.Module, calib: torch.Tensor, unit_batch: int, argmax: bool = True,
                meta: dict | None = None, clip: float | None = None,
                smooth: float | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """export_model's program JSON before chunk_reductions (an argmax still one op) and its weight
    arrays; export_generate rewrites it into a text-generation program."""
    model = model.eval()
    problems = module_problems(model)
    if problems:
        raise ExportError(problems[0] + (f" (and {len(problems) - 1} more: gpumesh program check lists them)"
                                         if len(problems) > 1 else ""))
    tokens = not calib.is_floating_point()
    calib = calib if tokens else calib.float()
    if len(calib) == 0:
        raise ExportError("no calibration samples")
    if tokens and (int(calib.min()) < 0 or int(calib.max()) >= 256):
        raise ExportError(f"token ids in [{int(calib.min())}, {int(calib.max())}]: v1 unit inputs are int8, so a "
                          f"token program takes ids in [0, 256) (byte-level vocabularies)")
    if smooth is not None:  # on a copy: the poster's model is left as it was
        model = copy.deepcopy(model)
        smooth_norms(trace(model, _example(calib, unit_batch)), _batches(calib, unit_batch), smooth)
    gm = trace(model, _example(calib, unit_batch))
    problems = expand_kv_heads(gm)  # grouped-query attention: the k / v projections give every head
    if problems:
        raise ExportError(problems[0] + (f" (and {len(problems) - 1} more: gpumesh program check lists them)"
                                         if len(problems) > 1 else ""))
    dyn = dynamic_nodes(gm)
    b = Builder(calibrate(gm, _batches(calib, unit_batch), clip))
    c = Ctx(gm, b, dyn)
    c.rope, problems = T.find_rope(gm, dyn)
    if problems:
        raise ExportError(problems[0] + (f" (and {len(problems) - 1} more: gpumesh program check lists them)"
                                         if len(problems) > 1 else ""))
    c.skip = {i for r in c.rope.values() for i in r.inner}
    nodes = list(gm.graph.nodes)
    out_node = next(n for n in nodes if n.op == "output").args[0]
    if not isinstance(out_node, fx.Node) or out_node not in c.dyn:
        what = f"a {type(out_node).__name__} of {len(out_node)}" if isinstance(out_node, (tuple, list)) else "a constant"
        raise ExportError(f"the model returns {what}: return one tensor (the logits), e.g. a wrapper "
                          f"whose forward returns model(x)[0]")
    if argmax and _is_softmax(out_node, c.mods):
        raise c.refuse(out_node, _HINT_SOFTMAX_OUT)
    input_decl = None
    meta = dict(meta or {})
    for n in nodes:
        if n.op == "output" or n not in c.dyn or n in c.alias or n in c.vals or n in c.skip:
            continue
        if n.op == "placeholder":
            input_decl = _placeholder(c, n, tokens, meta)
            continue
        try:
            _node(c, n, out_node if argmax else None)
        except ExportError:
            raise
        except ValueError as exc:  # a requant multiplier out of range: name the layer
            raise c.refuse(n, f"{exc}; its calibrated range is far from its input's (a layer that is "
                              f"(nearly) zero on the calibration data? calibrate with samples that use it)") from None
        except Exception as exc:  # the poster's model met a case the walk does not know: name the layer
            raise c.refuse(n, f"cannot export it ({type(exc).__name__}: {exc})") from None
    final = c.src(out_node)
    if argmax:
        b.op("argmax", "argmax", [final.name], {})
    b.prune()
    meta.setdefault("output", "argmax" if argmax else "int8 logits")
    obj = {"format": "gpumesh.program", "version": 1, "input": input_decl, "weights": b.weights,
           "ops": b.ops, "meta": meta}
    return obj, b.arrays


def unsupported(model: nn.Module, calib: torch.Tensor | None = None, unit_batch: int = 1) -> list[str]:
    """Every layer the export cannot express, one line each (`name (nn.Type): fix`): the module
    types, then (with samples to trace on) the functions and methods of the forward."""
    out = module_problems(model)
    if calib is None:
        return out
    tokens = not calib.is_floating_point()
    gm = trace(model.eval(), _example(calib if tokens else calib.float(), unit_batch))
    out += expand_kv_heads(gm)
    mods = dict(gm.named_modules())
    dyn = dynamic_nodes(gm)
    ropes, problems = T.find_rope(gm, dyn)
    out += problems
    inside = {i for r in ropes.values() for i in r.inner}
    for n in gm.graph.nodes:
        if n in dyn and n not in inside and n.op not in ("placeholder", "output") and not _known(n, mods):
            out.append(f"{describe(n, mods)}: {_call_hint(n)}")
    out_node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if isinstance(out_node, (tuple, list)):
        out.append(f"output: the model returns a {type(out_node).__name__} of {len(out_node)}; return one tensor")
    elif isinstance(out_node, fx.Node) and _is_softmax(out_node, mods):
        out.append(f"{describe(out_node, mods)}: {_HINT_SOFTMAX_OUT}")
    return out


_CALL_HINTS = {F.linear: "use an nn.Linear module (its weight is then quantized per channel)",
               F.layer_norm: "use an nn.LayerNorm module", torch.cat: "concatenation is not in the op set",
               F.dropout: "F.dropout with training=True: pass self.training (the export runs in eval mode)"}


def _call_hint(n: fx.Node) -> str:
    return _CALL_HINTS.get(n.target, "not in the op set (docs/protocol.md 2.2)") if n.op == "call_function" else (
        "not in the op set (docs/protocol.md 2.2)")


def _is_softmax(n: fx.Node, mods: dict) -> bool:
    return (n.op == "call_module" and isinstance(mods[n.target], nn.Softmax)) or _fn(n, _SOFTMAX_FNS, {"softmax"})


def _known(n: fx.Node, mods: dict) -> bool:
    """Whether the walk has a handler for this node's kind (its arguments are checked there)."""
    if n.op == "call_module":
        return True  # module_problems already refused the unsupported types
    if n.op == "call_function" and n.target is operator.getitem:
        return isinstance(n.args[0], fx.Node) and (n.args[0].op == "call_module" or _fn(n.args[0], {torch.split, torch.chunk}, {"split", "chunk"})
                                                   or _whole(n) or _empty(n))
    if _fn(n, T.CAT_FNS):
        return sum(not _empty(p) for p in (n.args[0] if n.args and isinstance(n.args[0], (tuple, list)) else [])) == 1
    fns = (_RELU_FNS | _ADD_FNS | _SUB_FNS | _MUL_FNS | _DIV_FNS | _MATMUL_FNS | _SOFTMAX_FNS | _FLATTEN_FNS
           | LUT_FUNCTIONS | {F.scaled_dot_product_attention, torch.transpose, torch.permute, torch.reshape,
                              torch.split, torch.chunk, F.dropout, torch.mean})
    methods = (_RESHAPE_METHODS | _SAME_METHODS | LUT_METHODS | {"relu", "add", "sub", "mul", "div", "matmul",
               "softmax", "flatten", "transpose", "permute", "masked_fill", "split", "chunk", "mean"})
    return (n.op == "call_function" and n.target in fns) or (n.op == "call_method" and n.target in methods)


def _placeholder(c: Ctx, n: fx.Node, tokens: bool, meta: dict) -> dict:
    v = n.meta["val"]
    shape = list(v.shape)
    if tokens:
        meta.update({"input_kind": "tokens", "token_offset": T.TOKEN_OFFSET})
        return T.token_input(c, n, shape)
    s_in = c.b.scale(n.name)
    meta.update({"input_scale": s_in, "input_zero_point": 0})
    if len(shape) == 4:
        c.b.op("to_nhwc", "transpose", [n.name], {"perm": [0, 2, 3, 1]})
        c.vals[n] = Val("to_nhwc", s_in, "nhwc")
    elif len(shape) in (2, 3):
        c.vals[n] = Val(n.name, s_in, "native")
    else:
        raise ExportError(f"unit input of rank {len(shape)}: the export takes [B, F], [B, T, D] or [B, C, H, W]")
    return {"name": n.name, "dtype": "int8", "shape": shape}


def _node(c: Ctx, n: fx.Node, last: fx.Node | None) -> None:
    """Emit the ops of one node that depends on the unit input (`last`: the output node when the
    program ends in an argmax; a Linear there keeps int32 logits)."""
    mods, b = c.mods, c.b
    m = mods.get(n.target) if n.op == "call_module" else None
    arg0 = n.args[0] if n.args else None
    if n in c.rope:  # x * cos + rotate_half(x) * sin (export_ops.find_rope)
        T.rope(c, c.rope[n])
        return
    x = c.src(arg0) if isinstance(arg0, fx.Node) and arg0 in c.dyn else None
    if isinstance(m, (nn.Dropout, nn.Identity)) or _fn(n, set(), _SAME_METHODS):
        if n.op == "call_method" and n.target == "to" and any(
                isinstance(a, torch.dtype) and not a.is_floating_point for a in (*n.args[1:], *n.kwargs.values())):
            raise c.refuse(n, "a cast to an integer dtype is not in the op set")
        c.alias[n] = arg0
    elif n.op == "call_function" and n.target is F.dropout and not n.kwargs.get(
            "training", n.args[2] if len(n.args) > 2 else True):
        c.alias[n] = arg0  # F.dropout(x, p, self.training) of a model in eval mode
    elif isinstance(m, (nn.Conv2d, nn.Linear)):
        _linear(c, n, m, x, last)
    elif isinstance(m, nn.Embedding):
        T.embedding(c, n, m)
    elif isinstance(m, nn.LayerNorm) or (m is not None and is_rmsnorm(m)):
        T.norm(c, n, m)
    elif isinstance(m, nn.MultiheadAttention):
        _mha(c, n, m, x)
    elif isinstance(m, nn.BatchNorm2d):
        raise c.refuse(n, "BatchNorm2d must follow a Conv2d to be folded")
    elif _is_relu(n, mods):
        c.vals[n] = Val(b.op(c.name(n), "relu", [x.name], {"zp": x.zp}), x.scale, x.kind, x.chw, x.zp)
    elif _lut_fn(n, mods) is not None:
        T.lut(c, n, _lut_fn(n, mods))
    elif isinstance(m, nn.MaxPool2d):
        k, s, p = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding))
        if m.dilation not in (1, (1, 1)) or m.ceil_mode:
            raise c.refuse(n, "maxpool with dilation or ceil_mode is not in the op set")
        attrs = {"kh": k[0], "kw": k[1], "sh": s[0], "sw": s[1], "ph": p[0], "pw": p[1]}
        c.vals[n] = Val(b.op(c.name(n), "maxpool", [_nhwc(c, n, x).name], attrs), x.scale, "nhwc")
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        if m.output_size not in (1, (1, 1)):
            raise c.refuse(n, "only AdaptiveAvgPool2d(1) is in the op set")
        hw = c.shape(arg0)[2] * c.shape(arg0)[3]
        s_y = b.scale(n.name)
        (mult,), shift = requant_multipliers([x.scale / (hw * s_y)])
        req = {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": 0, "lo": -128, "hi": 127}
        c.vals[n] = Val(b.op(c.name(n), "avgpool", [_nhwc(c, n, x).name], {"x_zp": x.zp, "requant": req}), s_y, "pooled")
    elif isinstance(m, nn.Flatten) or _fn(n, _FLATTEN_FNS, {"flatten"}):
        _flatten(c, n, x)
    elif _fn(n, {torch.mean}, {"mean"}):
        _mean(c, n, x)
    elif _fn(n, {torch.reshape}, _RESHAPE_METHODS):
        _reshape(c, n, x)
    elif _fn(n, {torch.transpose, torch.permute}, {"transpose", "permute"}):
        _transpose(c, n, x)
    elif _fn(n, _ADD_FNS | _SUB_FNS, {"add", "sub"}):
        _add(c, n)
    elif _fn(n, _MUL_FNS | _DIV_FNS, {"mul", "div"}):
        _mul(c, n)
    elif _fn(n, _MATMUL_FNS, {"matmul"}):
        a, bb = (_operand(c, n, v) for v in n.args[:2])
        c.vals[n] = T.matmul(c, c.name(n), a, bb, b.scale(n.name), 1.0, c.shape(n.args[1]))
    elif isinstance(m, nn.Softmax) or _fn(n, _SOFTMAX_FNS, {"softmax"}):
        dim = m.dim if m is not None else _dim_arg(n, 1, None)
        if dim not in (-1, len(c.shape(n)) - 1):
            raise c.refuse(n, f"softmax over dim {dim}: the op set has softmax over the last axis")
        c.vals[n] = T.softmax(c, c.name(n), x, x.causal)
    elif n.op == "call_method" and n.target == "masked_fill":
        _masked_fill(c, n, x)
    elif n.op == "call_function" and n.target is F.scaled_dot_product_attention:
        _sdpa(c, n)
    elif n.op == "call_function" and n.target is operator.getitem:
        _getitem(c, n)
    elif _fn(n, {torch.split, torch.chunk}, {"split", "chunk"}):
        _split(c, n)
    elif _fn(n, T.CAT_FNS):
        _cat(c, n)
    else:
        raise c.refuse(n, _call_hint(n))


def _operand(c: Ctx, n: fx.Node, a) -> Val:
    if isinstance(a, fx.Node) and a in c.dyn:
        return c.src(a)
    raise c.refuse(n, "a product with a constant matrix: use an nn.Linear")


def _nhwc(c: Ctx, n: fx.Node, x: Val) -> Val:
    if x.kind != "nhwc":
        raise c.refuse(n, "needs a 4-D image activation [N, C, H, W]")
    return x


def _native(c: Ctx, n: fx.Node, x: Val) -> Val:
    """x in torch's own layout: an NHWC image activation is transposed back to NCHW first."""
    if x.kind == "native" or x.kind == "ids":
        return x
    if x.kind in ("flat_chw", "pooled"):
        raise c.refuse(n, "reshaping a pooled or flattened image activation: flatten right before the Linear")
    return Val(c.b.op(f"{c.name(n)}.nchw", "transpose", [x.name], {"perm": [0, 3, 1, 2]}), x.scale, "native", zp=x.zp)


def _linear(c: Ctx, n: fx.Node, m: nn.Module, x: Val, last: fx.Node | None) -> None:
    mods, b = c.mods, c.b
    w = m.weight.detach().double().numpy()
    bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(w.shape[0])
    end = n
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise c.refuse(n, "only groups=1, dilation=1, numeric zero padding are in the op set")
        nxt = _single_user(n)
        if nxt is not None and nxt.op == "call_module" and isinstance(mods[nxt.target], nn.BatchNorm2d):
            bn = mods[nxt.target]
            g = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
            w = w * g[:, None, None, None]
            bias = (bias - bn.running_mean.double().numpy()) * g + bn.bias.detach().double().numpy()
            c.alias[nxt] = n
            end = nxt
    relu = _single_user(end) if _is_relu(_single_user(end), mods) else None
    if relu is not None:
        c.alias[relu] = n
        end = relu
    if end is last:  # int32 logits compared by the argmax as they are: one weight scale for every row
        wq, s_w = quantize_weight_per_channel(w.reshape(1, -1))
        wq, s_w = wq.reshape(w.shape), np.full(w.shape[0], s_w[0])
    else:
        wq, s_w = quantize_weight_per_channel(w)
    name = c.name(n)
    xin = x.name
    if isinstance(m, nn.Conv2d):
        _nhwc(c, n, x)
        kh, kw = m.kernel_size
        (sh, sw), (ph, pw) = m.stride, m.padding
        if (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0):
            xin = b.op(f"{name}.im2col", "im2col", [x.name],
                       {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw, "pad": x.zp})
        wq = wq.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)  # columns (kh, kw, c)
    elif x.kind == "flat_chw":  # torch flattened (C, H, W); our activation is (H, W, C)
        ch, h, ww = x.chw
        wq = wq.reshape(-1, ch, h, ww).transpose(0, 2, 3, 1).reshape(wq.shape[0], -1)
    elif x.kind == "nhwc":
        raise c.refuse(n, "a Linear on a 4-D image activation needs a flatten first")
    elif x.kind == "ids":
        raise c.refuse(n, "a Linear on token ids: embed them first (nn.Embedding)")
    wn = b.weight(f"{name}.w", np.ascontiguousarray(wq))
    bn_ = b.weight(f"{name}.b", quantize_bias(bias, x.scale, s_w))
    if end is last:  # logits stay int32 for an exact argmax
        b.op(name, "linear", [xin, wn, bn_], {"x_zp": x.zp})
        c.vals[n] = Val(name, 0.0, "native")
        return
    s_y = b.scale(end.name)
    qp = b.weight(f"{name}.qp", qp_table(x.scale * s_w / s_y))
    req = {"mode": "per_channel", "zp": 0, "lo": 0 if relu is not None else -128, "hi": 127}
    b.op(name, "linear", [xin, wn, bn_, qp], {"x_zp": x.zp, "requant": req})
    c.vals[n] = Val(name, s_y, "nhwc" if isinstance(m, nn.Conv2d) else "native")


def _flatten(c: Ctx, n: fx.Node, x: Val) -> None:
    src_shape, out = c.shape(n.args[0]), c.shape(n)
    if out == src_shape or (x.kind == "pooled" and len(out) == 2):
        c.alias[n] = n.args[0]
    elif x.kind == "nhwc" and len(out) == 2:  # [N, C, H, W] -> [N, C*H*W]: kept as (H, W, C)
        _, ch, h, ww = src_shape
        outd = {"dtype": "int8", "shape": out}
        c.vals[n] = Val(c.b.op(c.name(n), "reshape", [x.name], {}, outd), x.scale, "flat_chw", (ch, h, ww))
    else:
        _reshape(c, n, x)


def _mean(c: Ctx, n: fx.Node, x: Val) -> None:
    """The mean over the tokens of [B, T, D] (a ViT's pooling): the global avgpool of the same bytes
    viewed as [B, T, 1, D] (NHWC with H = T, W = 1)."""
    shape = c.shape(n.args[0])
    dim = _dim_arg(n, 1, None)
    dims = [d % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else [dim])] if dim is not None else []
    if x.kind != "native" or len(shape) != 3 or dims != [1] or n.kwargs.get("keepdim") or len(n.args) > 2:
        raise c.refuse(n, "only the mean over the tokens of [B, T, D] (dim=1) is in the op set")
    b, t, d = shape
    name = c.name(n)
    v = c.b.op(f"{name}.view", "reshape", [x.name], {}, {"dtype": "int8", "shape": [b, t, 1, d]})
    s_y = c.b.scale(n.name)
    req = T.per_tensor(x.scale / (t * s_y))
    c.vals[n] = Val(c.b.op(name, "avgpool", [v], {"x_zp": x.zp, "requant": req}), s_y, "native")


def _reshape(c: Ctx, n: fx.Node, x: Val) -> None:
    out = c.shape(n)
    if (out == c.shape(n.args[0]) and x.kind != "nhwc") or (x.kind == "pooled" and len(out) == 2):
        c.alias[n] = n.args[0]
        return
    x = _native(c, n, x)
    dt = "int32" if x.kind == "ids" else "int8"
    name = c.b.op(c.name(n), "reshape", [x.name], {}, {"dtype": dt, "shape": out})
    c.vals[n] = Val(name, x.scale, x.kind, zp=x.zp)


def _transpose(c: Ctx, n: fx.Node, x: Val) -> None:
    rank = len(c.shape(n))
    perm = permutation(n, rank)
    if perm == list(range(rank)):
        c.alias[n] = n.args[0]
        return
    if x.kind == "nhwc":  # torch's NCHW permuted by perm = our NHWC permuted by [0, 3, 1, 2][perm]
        perm = [[0, 3, 1, 2][p] for p in perm]
    elif x.kind != "native":
        raise c.refuse(n, "transposing this value is not in the op set")
    swap = perm == [*range(rank - 2), rank - 1, rank - 2] and x.kind == "native"
    name = c.b.op(c.name(n), "transpose", [x.name], {"perm": perm})
    c.vals[n] = Val(name, x.scale, "native", zp=x.zp, swapped=x if swap else None)


def _is_dyn(c: Ctx, a) -> bool:
    return isinstance(a, fx.Node) and a in c.dyn


def _add(c: Ctx, n: fx.Node) -> None:
    """a + b (or a - b with b constant): two activations, or one and a constant (a learned
    position table, a bias, `x + 1.0`), or an additive causal mask (0 / -inf)."""
    a, bb = n.args[:2]
    sub = _fn(n, _SUB_FNS, {"sub"})
    if not _is_dyn(c, a):
        if sub:
            raise c.refuse(n, "constant - activation: write it as -1 * ... in a Linear, or activation - constant")
        a, bb = bb, a
    if "alpha" in n.kwargs:
        raise c.refuse(n, "add with alpha is not in the op set")
    ya = c.src(a)
    if _is_dyn(c, bb):
        if sub:
            raise c.refuse(n, "the difference of two activations is not in the op set; add a negated one")
        yb = c.src(bb)
    else:
        v = c.value(bb)
        if not sub and isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(kept(v).all()):
            keep = kept(v)  # -inf, or transformers' finfo(dtype).min
            if bool((v[keep] != 0).any()) or not T.is_causal_mask(keep, c.shape(n)):
                raise c.refuse(n, "an additive mask other than the causal 0 / -inf pattern is not in the op set")
            c.vals[n] = Val(ya.name, ya.scale, ya.kind, ya.chw, ya.zp, causal=True)
            return
        if sub:
            v = -torch.as_tensor(v) if isinstance(v, torch.Tensor) else -v
            bb = v
        yb = T.constant(c, n, bb, c.shape(n), "const")
    if ya.kind != yb.kind and "nhwc" in (ya.kind, yb.kind):
        ya, yb = _native(c, n, ya), _native(c, n, yb)
    b = c.b
    relu = _single_user(n) if _is_relu(_single_user(n), c.mods) else None
    end = relu if relu is not None else n
    if relu is not None:
        c.alias[relu] = n
    s_y = b.scale(end.name)
    (ma, mb), shift = add_multipliers([ya.scale / s_y, yb.scale / s_y])
    attrs = {"za": ya.zp, "zb": yb.zp, "ma": ma, "mb": mb, "shift": shift, "zy": 0,
             "lo": 0 if relu is not None else -128, "hi": 127}
    c.vals[n] = Val(b.op(c.name(n), "add", [ya.name, yb.name], attrs), s_y, ya.kind, ya.chw)


def _mul(c: Ctx, n: fx.Node) -> None:
    a, bb = n.args[:2]
    div = _fn(n, _DIV_FNS, {"div"})
    if div and (not _is_dyn(c, a) or _is_dyn(c, bb)):
        raise c.refuse(n, "only an activation divided by a constant is in the op set")
    if not _is_dyn(c, a):
        a, bb = bb, a
    if "rounding_mode" in n.kwargs:
        raise c.refuse(n, "a rounding division is not in the op set")
    x = c.src(a)
    if _is_dyn(c, bb):
        T.mul(c, n, x, c.src(bb))
        return
    v = c.value(bb)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = float(v)
    if isinstance(v, (int, float)):
        f = 1.0 / v if div else float(v)
        if not f > 0 or not np.isfinite(f):
            raise c.refuse(n, f"scaling by {v}: only a positive constant factor is in the op set")
        c.vals[n] = Val(x.name, x.scale * f, x.kind, x.chw, x.zp, x.causal,
                        Val(x.swapped.name, x.swapped.scale * f, "native") if x.swapped is not None else None)
        return
    if div:
        raise c.refuse(n, "division by a constant tensor is not in the op set: multiply by its inverse")
    T.mul(c, n, x, T.constant(c, n, bb, c.shape(n), "const"))


def _masked_fill(c: Ctx, n: fx.Node, x: Val) -> None:
    mask, value = c.value(n.args[1]), c.value(n.args[2])
    if _is_dyn(c, n.args[1]) or not isinstance(mask, torch.Tensor):
        raise c.refuse(n, "a mask computed from the input is not in the op set; only the causal mask is")
    if not (isinstance(value, (int, float)) and value <= -1e4):
        raise c.refuse(n, f"masked_fill with {value}: only masking out (-inf) is in the op set")
    if not T.is_causal_mask(~mask.bool(), c.shape(n)):
        raise c.refuse(n, "only the causal mask (j > t masked) is in the op set")
    c.vals[n] = Val(x.name, x.scale, x.kind, x.chw, x.zp, causal=True)


def _sdpa(c: Ctx, n: fx.Node) -> None:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    got = dict(zip(names, n.args, strict=False)) | dict(n.kwargs)
    if got.get("dropout_p", 0.0) or got.get("enable_gqa"):
        raise c.refuse(n, "dropout_p > 0 or enable_gqa with k and v not from a per-head projection: export with "
                          "dropout_p=0.0 (grouped-query attention: see the line about its expansion)")
    q, k, v = (got[k] for k in ("query", "key", "value"))
    if not all(_is_dyn(c, t) for t in (q, k, v)):
        raise c.refuse(n, "attention over constant tensors is not in the op set")
    mask = got.get("attn_mask")
    if _is_dyn(c, mask):
        raise c.refuse(n, "an attention mask computed from the input is not in the op set")
    c.vals[n] = T.attention(c, n, c.name(n), c.src(q), c.src(k), c.src(v), c.shape(v),
                            c.value(mask) if mask is not None else None, bool(got.get("is_causal", False)),
                            got.get("scale"), c.b.scale(n.name))


def _mha(c: Ctx, n: fx.Node, m: nn.MultiheadAttention, x: Val) -> None:
    """Batch-first self-attention: in_proj as three Linears, heads [B, H, T, Dh] (V stored as
    [B, H, Dh, T] and read by rows), scores, softmax, context, heads merged, out_proj."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
    got = dict(zip(names, n.args, strict=False)) | dict(n.kwargs)
    if not (got["query"] is got["key"] is got["value"]):
        raise c.refuse(n, "only self-attention (query, key and value the same tensor) is in the op set")
    if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise c.refuse(n, "export needs batch_first=True, no bias_k/bias_v, add_zero_attn=False")
    if got.get("key_padding_mask") is not None:
        raise c.refuse(n, "key_padding_mask is not in the op set (pad with full sequences)")
    if any(u.args[1] != 0 for u in n.users):
        raise c.refuse(n, "the attention weights output is not exported: use need_weights=False, [0] only")
    mask = got.get("attn_mask")
    if _is_dyn(c, mask):
        raise c.refuse(n, "an attention mask computed from the input is not in the op set")
    keep = None
    if mask is not None:
        mv = c.value(mask)
        keep = ~mv if mv.dtype == torch.bool else mv  # nn.MultiheadAttention: True = masked out
    bsz, t, d = c.shape(n.args[0])
    h, dh = m.num_heads, d // m.num_heads
    name, b = c.name(n), c.b
    w = m.in_proj_weight.detach().double().numpy()
    bias = m.in_proj_bias.detach().double().numpy() if m.in_proj_bias is not None else np.zeros(3 * d)
    heads = {}
    for i, part in enumerate("qkv"):
        wq, s_w = quantize_weight_per_channel(w[i * d : (i + 1) * d])
        s_y = b.scale(f"{n.name}:{part}")
        qp = b.weight(f"{name}.{part}.qp", qp_table(x.scale * s_w / s_y))
        req = {"mode": "per_channel", "zp": 0, "lo": -128, "hi": 127}
        ins = [x.name, b.weight(f"{name}.{part}.w", wq), b.weight(f"{name}.{part}.b", quantize_bias(bias[i * d : (i + 1) * d], x.scale, s_w)), qp]
        lin = b.op(f"{name}.{part}", "linear", ins, {"x_zp": x.zp, "requant": req})
        r = b.op(f"{name}.{part}.heads", "reshape", [lin], {}, {"dtype": "int8", "shape": [bsz, t, h, dh]})
        perm = [0, 2, 3, 1] if part == "v" else [0, 2, 1, 3]
        heads[part] = Val(b.op(f"{name}.{part}.t", "transpose", [r], {"perm": perm}), s_y, "native")
    vt = heads["v"]
    v = Val(vt.name, vt.scale, "native", swapped=vt)  # v = vt^T: P.V reads vt by rows (tb = 1)
    ctx = T.attention(c, n, f"{name}.attn", heads["q"], heads["k"], v, [bsz, h, t, dh], keep,
                      bool(got.get("is_causal", False)), None, b.scale(f"{n.name}:context"))
    back = b.op(f"{name}.merge", "transpose", [ctx.name], {"perm": [0, 2, 1, 3]})
    merged = b.op(f"{name}.merged", "reshape", [back], {}, {"dtype": "int8", "shape": [bsz, t, d]})
    o = m.out_proj
    wq, s_w = quantize_weight_per_channel(o.weight.detach().double().numpy())
    ob = o.bias.detach().double().numpy() if o.bias is not None else np.zeros(d)
    s_y = b.scale(n.name)
    ins = [merged, b.weight(f"{name}.out.w", wq), b.weight(f"{name}.out.b", quantize_bias(ob, ctx.scale, s_w)),
           b.weight(f"{name}.out.qp", qp_table(ctx.scale * s_w / s_y))]
    req = {"mode": "per_channel", "zp": 0, "lo": -128, "hi": 127}
    c.vals[n] = Val(b.op(f"{name}.out", "linear", ins, {"x_zp": 0, "requant": req}), s_y, "native")


def _empty(n) -> bool:
    v = n.meta.get("val") if isinstance(n, fx.Node) else None
    return isinstance(v, torch.Tensor) and v.numel() == 0


def _cat(c: Ctx, n: fx.Node) -> None:
    """A concatenation of one activation and empty tensors (GPT-NeoX's `cat([q_embed, q_pass])`
    when every column is rotated) is that activation; any other is refused."""
    parts = [p for p in (n.args[0] if n.args and isinstance(n.args[0], (tuple, list)) else []) if not _empty(p)]
    if len(parts) == 1 and _is_dyn(c, parts[0]):
        c.alias[n] = parts[0]
    else:
        raise c.refuse(n, _call_hint(n))


def _whole(n: fx.Node) -> bool:
    """An index of every element in order: slices (and one Ellipsis) each covering its whole axis."""
    src, idx = n.args
    v = src.meta.get("val") if isinstance(src, fx.Node) else None
    idx = idx if isinstance(idx, tuple) else (idx,)
    if not isinstance(v, torch.Tensor) or sum(i is Ellipsis for i in idx) > 1:
        return False
    if Ellipsis in idx:
        at = idx.index(Ellipsis)
        idx = idx[:at] + (slice(None),) * (v.dim() - len(idx) + 1) + idx[at + 1 :]
    return len(idx) <= v.dim() and all(
        isinstance(i, slice) and i.indices(d) == (0, d, 1) for i, d in zip(idx, v.shape, strict=False))


def _getitem(c: Ctx, n: fx.Node) -> None:
    src, idx = n.args
    if src.op == "call_module" and isinstance(c.mods[src.target], nn.MultiheadAttention) and idx == 0:
        c.alias[n] = src
    elif src in c.vals and isinstance(c.vals[src], list):  # a part of a split Linear
        c.vals[n] = c.vals[src][idx](n)
    elif _whole(n):  # x[:, 0:, :] (HF's logits_to_keep = 0): the same tensor
        c.alias[n] = src
    elif _empty(n) and all(_fn(u, T.CAT_FNS) for u in n.users):  # x[..., D:] (GPT-NeoX's q_pass, all rotated)
        c.vals[n] = Val("", 1.0, "empty")
    else:
        raise c.refuse(n, "indexing or slicing an activation is not in the op set")


def _split(c: Ctx, n: fx.Node) -> None:
    """`qkv.split(D, dim=-1)` / `.chunk(3, -1)` of a Linear's output: each part becomes its own
    Linear over the matching rows of the weight (requantized to that part's calibrated range); the
    whole Linear is then unused and pruned."""
    src = n.args[0]
    shape = c.shape(src)
    dim = _dim_arg(n, 2, 0) % len(shape)
    m = c.mods.get(src.target) if src.op == "call_module" else None
    lin, view, perms = src, None, []
    if dim == len(shape) - 1 and not isinstance(m, nn.Linear):
        found = _viewed_linear(c, src)
        if found is not None:
            lin, m, view, perms = found
    if dim != len(shape) - 1 or not isinstance(m, nn.Linear):
        raise c.refuse(n, "only splitting a Linear's output along its last axis is in the op set "
                          "(or use one Linear per part)")
    sizes = [p.shape[-1] for p in n.meta["val"]]
    x = c.src(lin.args[0])
    starts = np.cumsum([0, *sizes])

    def part(i: int):
        def emit(g: fx.Node) -> Val:
            lo, hi = int(starts[i]), int(starts[i + 1])
            rows = slice(lo, hi) if view is None else np.concatenate(  # group j's columns lo..hi of the view
                [j * view[-1] + np.arange(lo, hi) for j in range(view[-2])])
            w = m.weight.detach().double().numpy()[rows]
            bias = m.bias.detach().double().numpy()[rows] if m.bias is not None else np.zeros(len(w))
            wq, s_w = quantize_weight_per_channel(w)
            name, b = c.name(g), c.b
            s_y = b.scale(g.name)
            ins = [x.name, b.weight(f"{name}.w", wq), b.weight(f"{name}.b", quantize_bias(bias, x.scale, s_w)),
                   b.weight(f"{name}.qp", qp_table(x.scale * s_w / s_y))]
            req = {"mode": "per_channel", "zp": 0, "lo": -128, "hi": 127}
            y = b.op(name, "linear", ins, {"x_zp": x.zp, "requant": req})
            if view is not None:  # the part's own view and transposes
                y = b.op(f"{name}.view", "reshape", [y], {}, {"dtype": "int8", "shape": [*view[:-1], hi - lo]})
                for j, perm in enumerate(perms):
                    y = b.op(f"{name}.t{j}", "transpose", [y], {"perm": perm})
            return Val(y, s_y, "native")
        return emit

    c.vals[n] = [part(i) for i in range(len(sizes))]


def _viewed_linear(c: Ctx, src: fx.Node):
    """(the Linear's node, its module, the view's shape, the transposes' perms) when `src` is a
    Linear's output viewed with its last axis split into [G, C] (leading axes kept), then transposed
    with the last axis staying last (GPT-NeoX's fused qkv: `view(B, T, H, 3 Dh).transpose(1, 2)`),
    so that a split of src's last axis is one Linear per part over rows `g*C + lo .. g*C + hi`
    of every group g; else None."""
    perms, x = [], src
    while isinstance(x, fx.Node) and _fn(x, {torch.transpose, torch.permute}, {"transpose", "permute"}):
        rank = len(c.shape(x))
        perm = permutation(x, rank)
        if perm[-1] != rank - 1:
            return None
        perms.append(perm)
        x = x.args[0]
    if not (isinstance(x, fx.Node) and _fn(x, {torch.reshape}, _RESHAPE_METHODS)) or not isinstance(x.args[0], fx.Node):
        return None
    lin = x.args[0]
    m = c.mods.get(lin.target) if lin.op == "call_module" else None
    ls, vs = c.shape(lin), c.shape(x)
    if not isinstance(m, nn.Linear) or len(vs) != len(ls) + 1 or vs[:-2] != ls[:-1] or vs[-2] * vs[-1] != ls[-1]:
        return None
    return lin, m, vs, perms[::-1]


# ---------------------------------------------------------------------------------------------
# Chunked reductions (docs/protocol.md 5.7.7)


def _op_desc(op: Opcode, x: TensorType, **attrs) -> OpDescriptor:
    """A descriptor of `op` on one input of type `x` (its output type is not needed by step_reads)."""
    return OpDescriptor(op, (SlotRef(SlotKind.UNIT_INPUT, 0, x),), x, make_attrs(op, **attrs))


def _within(d: OpDescriptor) -> bool:
    leaves, scanned = step_reads(d)
    return leaves <= MAX_STEP_LEAVES and scanned <= MAX_STEP_ELEMENTS


def _largest_q(make, k: int) -> int:
    """The largest chunk length q in [1, k] whose one-step is within the bounds (step_reads grows
    with q). make(q) -> descriptor."""
    lo, hi = 1, k
    if not _within(make(1)):
        raise ExportError("a chunk of one element is above the one-step bounds")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _within(make(mid)) else (lo, mid - 1)
    return lo


def _over_bounds(op: Opcode, x: TensorType, attrs: dict) -> bool:
    raw = dict(attrs)
    if "requant" in raw:
        raw["requant"] = Requant.from_json(raw["requant"])
    return not _within(_op_desc(op, x, **raw))


def _lower_argmax(o: dict, x: TensorType) -> list[dict]:
    """argmax -> [reshape to rank 2] + chunkmax (+ chunkmax of pairs ...) + pairargmax [+ reshape back]."""
    name, src, ops = o["name"], o["inputs"][0], []
    shape = x.shape
    if len(shape) == 4:  # chunkmax of values takes rank 1..3
        x = TensorType(x.dtype, (shape[0] * shape[1] * shape[2], shape[3]))
        src = _emit(ops, f"{name}.rows", "reshape", [src], {}, {"dtype": x.dtype.label, "shape": list(x.shape)})
    k = x.shape[-1]
    q = _largest_q(lambda q: _op_desc(Opcode.CHUNKMAX, x, q=q, pairs=0), k)
    g = -(-k // q)
    src = _emit(ops, f"{name}.chunk0", "chunkmax", [src], {"q": q, "pairs": 0})
    pairs = TensorType(DType.INT32, (*x.shape[:-1], g, 2))
    level = 1
    while not _within(_op_desc(Opcode.PAIRARGMAX, pairs)):  # the same split over the pairs
        q = _largest_q(lambda q, t=pairs: _op_desc(Opcode.CHUNKMAX, t, q=q, pairs=1), g)
        g = -(-g // q)
        src = _emit(ops, f"{name}.chunk{level}", "chunkmax", [src], {"q": q, "pairs": 1})
        pairs = TensorType(DType.INT32, (*x.shape[:-1], g, 2))
        level += 1
    if len(shape) == 4:
        src = _emit(ops, f"{name}.index", "pairargmax", [src], {})
        _emit(ops, name, "reshape", [src], {}, {"dtype": "int32", "shape": list(shape[:-1])})
    else:
        _emit(ops, name, "pairargmax", [src], {})
    return ops


def _lower_avgpool(o: dict, x: TensorType) -> list[dict]:
    """global avgpool -> chunksum + sumrequant (same requant: the same int8 result)."""
    n, h, w, c = x.shape
    if 255 * h * w > (1 << 31) - 1:  # sumrequant's wrap32 would then differ from the exact sum
        raise ExportError(f"{o['name']}: global avgpool over {h}x{w} positions; at most 2^23 keep the sum exact")
    zp = o["attrs"].get("x_zp", 0)
    q = _largest_q(lambda q: _op_desc(Opcode.CHUNKSUM, x, x_zp=zp, q=q), h * w)
    g = -(-(h * w) // q)
    sums = TensorType(DType.INT32, (n, c, g))
    req = Requant.from_json(o["attrs"]["requant"])
    if not _within(_op_desc(Opcode.SUMREQUANT, sums, requant=req)):  # pragma: no cover - 5.7.7: G <= 16384
        raise ExportError(f"{o['name']}: {g} partial sums per channel above the one-step bounds")
    ops: list[dict] = []
    src = _emit(ops, f"{o['name']}.chunks", "chunksum", [o["inputs"][0]], {"x_zp": zp, "q": q})
    _emit(ops, o["name"], "sumrequant", [src], {"requant": o["attrs"]["requant"]})
    return ops


def _emit(ops: list[dict], name: str, op: str, inputs: list[str], attrs: dict, out: dict | None = None) -> str:
    ops.append({"name": name, "op": op, "inputs": inputs, "attrs": attrs, **({"out": out} if out else {})})
    return name


def chunk_reductions(obj: dict) -> dict:
    """The program JSON with every argmax and global avgpool whose one-step is above the bounds of
    docs/protocol.md 3.4 replaced by its chunked form (5.7.7), the last op keeping the original
    name, so later ops and the program output read it unchanged. Other programs are returned as
    they are (same ops, same root)."""
    lowered: list[dict] = []
    for o in obj["ops"]:
        kind = {"argmax": Opcode.ARGMAX, "avgpool": Opcode.AVGPOOL}.get(o["op"])
        if kind is not None:
            x = _type_of(obj, lowered, o["inputs"][0])
            if _over_bounds(kind, x, o.get("attrs") or {}):
                lowered += _lower_argmax(o, x) if kind == Opcode.ARGMAX else _lower_avgpool(o, x)
                continue
        lowered.append(o)
    return {**obj, "ops": lowered}


def _type_of(obj: dict, ops: list[dict], name: str) -> TensorType:
    """Type of the unit input, a weight or one of `ops` (typed by the program rules)."""
    for t in (obj["input"], *obj["weights"]):
        if t["name"] == name:
            return TensorType(DType.parse(t["dtype"]), tuple(t["shape"]))
    upto = next(i for i, o in enumerate(ops) if o["name"] == name)
    return Program.from_json({**obj, "ops": ops[: upto + 1]}).ops[-1].desc.out

