"""Export a float nn.Module to an int8 program (post-training quantization).

Reductions above the one-step bounds (docs/protocol.md 3.4) are lowered into the chunked ops of
5.7.7 (`chunk_reductions`): an argmax into chunkmax (+ chunkmax of pairs while needed) + pairargmax,
a global avgpool into chunksum + sumrequant; both give the unchunked op's result bit for bit.

Supported (torch.fx graph): Conv2d (groups 1, dilation 1, zero padding) with a following BatchNorm2d
folded and a following ReLU fused into the requant clamp; Linear (+ fused ReLU); ReLU; MaxPool2d;
AdaptiveAvgPool2d(1); Flatten; residual add (+ fused ReLU); Dropout/Identity (eval: identity).
Weights: symmetric per-channel int8; activations: symmetric per-tensor int8 from calibration max.
Layout: the unit input is int8 in the model's own layout (NCHW for images), then channels-last.

The model is the poster's OWN code, run locally; workers only ever receive the exported data.
Adapter code (torch); used by the CLI and the examples.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

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
from gpumesh.node.runtime.files import RuntimeFault
from gpumesh.node.runtime.quant import (
    act_scale,
    add_multipliers,
    qp_table,
    quantize_bias,
    quantize_weight_per_channel,
    requant_multipliers,
)


class ExportError(RuntimeFault):
    """The model uses something the v1 op set cannot express."""


@dataclass
class _Val:
    name: str  # program tensor name
    scale: float
    kind: str  # "nhwc" (4-D channels-last), "flat" (2-D), "flat_chw" (flattened NHWC of a CHW model)
    chw: tuple[int, int, int] | None = None  # (C, H, W) before a flatten, for weight permutation


_RELU_FNS = {F.relu, torch.relu}
_ADD_FNS = {operator.add, torch.add}
_FLATTEN_FNS = {torch.flatten}


class _Builder:
    def __init__(self, calib: dict[str, float]) -> None:
        self.calib = calib
        self.weights: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.ops: list[dict] = []

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


def _single_user(n: fx.Node) -> fx.Node | None:
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def _is_relu(n: fx.Node | None, mods: dict) -> bool:
    if n is None:
        return False
    return (n.op == "call_module" and isinstance(mods[n.target], nn.ReLU)) or (
        n.op == "call_function" and n.target in _RELU_FNS) or (n.op == "call_method" and n.target == "relu")


def _calibrate(gm: fx.GraphModule, calib: torch.Tensor) -> dict[str, float]:
    stats: dict[str, float] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if isinstance(v, torch.Tensor):
                stats[n.name] = max(stats.get(n.name, 0.0), float(v.detach().abs().max()))
            return v

    with torch.no_grad():
        Rec(gm).run(calib)
    return stats


def export_model(model: nn.Module, calib: torch.Tensor, unit_batch: int, argmax: bool = True,
                 meta: dict | None = None) -> tuple[Program, dict[str, np.ndarray]]:
    """Quantize `model` (float, eval mode) into a program whose unit input is int8
    [unit_batch, *calib.shape[1:]]. Returns the validated Program and its weight arrays."""
    model = model.eval()
    gm = fx.symbolic_trace(model)
    mods = dict(gm.named_modules())
    b = _Builder(_calibrate(gm, calib.float()))
    vals: dict[fx.Node, _Val] = {}
    alias: dict[fx.Node, fx.Node] = {}  # folded / fused nodes -> the node whose value stands for them
    in_shape = (unit_batch, *calib.shape[1:])
    nodes = list(gm.graph.nodes)
    out_node = next(n for n in nodes if n.op == "output").args[0]
    last_fc = out_node if argmax else None

    def src(n) -> _Val:
        while n in alias:
            n = alias[n]
        return vals[n]

    def stat(n: fx.Node) -> float:
        return act_scale(b.calib[n.name])

    for n in nodes:
        if n in alias or n.op in ("get_attr",):
            continue
        if n.op == "placeholder":
            s_in = stat(n)
            if len(in_shape) == 4:
                b.op("to_nhwc", "transpose", [n.name], {"perm": [0, 2, 3, 1]})
                vals[n] = _Val("to_nhwc", s_in, "nhwc")
            elif len(in_shape) == 2:
                vals[n] = _Val(n.name, s_in, "flat")
            else:
                raise ExportError(f"unit input of rank {len(in_shape)}: v1 exports [B, F] or [B, C, H, W]")
            input_decl = {"name": n.name, "dtype": "int8", "shape": list(in_shape)}
            input_scale = s_in
            continue
        if n.op == "output":
            continue
        m = mods.get(n.target) if n.op == "call_module" else None
        x = src(n.args[0]) if n.args and isinstance(n.args[0], fx.Node) else None
        if isinstance(m, (nn.Dropout, nn.Identity)):
            alias[n] = n.args[0]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().double().numpy()
            bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(w.shape[0])
            end = n
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                    raise ExportError(f"{n.target}: only groups=1, dilation=1, numeric zero padding")
                nxt = _single_user(n)
                if nxt is not None and nxt.op == "call_module" and isinstance(mods[nxt.target], nn.BatchNorm2d):
                    bn = mods[nxt.target]
                    g = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
                    w = w * g[:, None, None, None]
                    bias = (bias - bn.running_mean.double().numpy()) * g + bn.bias.detach().double().numpy()
                    alias[nxt] = n
                    end = nxt
            relu = _single_user(end) if _is_relu(_single_user(end), mods) else None
            if relu is not None:
                alias[relu] = n
                end = relu
            wq, s_w = quantize_weight_per_channel(w)
            name = str(n.target)
            xin = x.name
            if isinstance(m, nn.Conv2d):
                if x.kind != "nhwc":
                    raise ExportError(f"{name}: conv input must be a 4-D activation")
                kh, kw = m.kernel_size
                (sh, sw), (ph, pw) = m.stride, m.padding
                if (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0):
                    xin = b.op(f"{name}.im2col", "im2col", [x.name],
                               {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw, "pad": 0})
                wq = wq.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)  # columns (kh, kw, c)
            elif x.kind == "flat_chw":  # torch flattened (C, H, W); our activation is (H, W, C)
                c, h, ww = x.chw
                wq = wq.reshape(-1, c, h, ww).transpose(0, 2, 3, 1).reshape(wq.shape[0], -1)
            elif x.kind == "nhwc":
                raise ExportError(f"{name}: linear on a 4-D activation needs a flatten first")
            wn = b.weight(f"{name}.w", np.ascontiguousarray(wq))
            bn_ = b.weight(f"{name}.b", quantize_bias(bias, x.scale, s_w))
            if end is last_fc:  # logits stay int32 for an exact argmax
                b.op(name, "linear", [xin, wn, bn_], {"x_zp": 0})
                vals[n] = _Val(name, 0.0, "flat")
            else:
                s_y = stat(end)
                qp = b.weight(f"{name}.qp", qp_table(x.scale * s_w / s_y))
                req = {"mode": "per_channel", "zp": 0, "lo": 0 if relu is not None else -128, "hi": 127}
                b.op(name, "linear", [xin, wn, bn_, qp], {"x_zp": 0, "requant": req})
                vals[n] = _Val(name, s_y, "nhwc" if isinstance(m, nn.Conv2d) else "flat")
        elif isinstance(m, nn.BatchNorm2d):
            raise ExportError(f"{n.target}: BatchNorm2d must follow a Conv2d to be folded")
        elif _is_relu(n, mods):
            vals[n] = _Val(b.op(n.name, "relu", [x.name], {"zp": 0}), x.scale, x.kind, x.chw)
        elif isinstance(m, nn.MaxPool2d):
            k, s, p = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding))
            if m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise ExportError(f"{n.target}: maxpool with dilation or ceil_mode")
            attrs = {"kh": k[0], "kw": k[1], "sh": s[0], "sw": s[1], "ph": p[0], "pw": p[1]}
            vals[n] = _Val(b.op(n.name, "maxpool", [x.name], attrs), x.scale, "nhwc")
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                raise ExportError(f"{n.target}: only AdaptiveAvgPool2d(1)")
            hw = _hw(gm, n, calib)
            s_y = stat(n)
            (mult,), shift = requant_multipliers([x.scale / (hw * s_y)])
            req = {"mode": "per_tensor", "mult": mult, "shift": shift, "zp": 0, "lo": -128, "hi": 127}
            vals[n] = _Val(b.op(n.name, "avgpool", [x.name], {"x_zp": 0, "requant": req}), s_y, "flat")
        elif isinstance(m, nn.Flatten) or (n.op == "call_function" and n.target in _FLATTEN_FNS) or (
                n.op == "call_method" and n.target == "flatten"):
            if x.kind == "flat":
                alias[n] = n.args[0]
                continue
            c, h, ww = _chw(gm, n, calib)
            out = {"dtype": "int8", "shape": [unit_batch, c * h * ww]}
            vals[n] = _Val(b.op(n.name, "reshape", [x.name], {}, out), x.scale, "flat_chw", (c, h, ww))
        elif (n.op == "call_function" and n.target in _ADD_FNS) or (n.op == "call_method" and n.target == "add"):
            ya = src(n.args[0])
            yb = src(n.args[1])
            relu = _single_user(n) if _is_relu(_single_user(n), mods) else None
            end = relu if relu is not None else n
            if relu is not None:
                alias[relu] = n
            s_y = stat(end)
            (ma, mb), shift = add_multipliers([ya.scale / s_y, yb.scale / s_y])
            attrs = {"za": 0, "zb": 0, "ma": ma, "mb": mb, "shift": shift, "zy": 0,
                     "lo": 0 if relu is not None else -128, "hi": 127}
            vals[n] = _Val(b.op(n.name, "add", [ya.name, yb.name], attrs), s_y, ya.kind, ya.chw)
        else:
            raise ExportError(f"unsupported node {n.op} {n.target} (v1 op set)")
    final = src(out_node)
    if argmax:
        b.op("argmax", "argmax", [final.name], {})
    obj = {"format": "gpumesh.program", "version": 1, "input": input_decl, "weights": b.weights,
           "ops": b.ops, "meta": {"input_scale": input_scale, "input_zero_point": 0,
                                  "output": "argmax" if argmax else "int8 logits", **(meta or {})}}
    return Program.from_json(chunk_reductions(obj)), b.arrays


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


def _shape_of(gm: fx.GraphModule, node: fx.Node, calib: torch.Tensor) -> tuple[int, ...]:
    shapes: dict[str, tuple[int, ...]] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if isinstance(v, torch.Tensor):
                shapes[n.name] = tuple(v.shape)
            return v

    with torch.no_grad():
        Rec(gm).run(calib[:1].float())
    return shapes[node.name]


def _chw(gm, n, calib) -> tuple[int, int, int]:
    s = _shape_of(gm, n.args[0], calib)
    if len(s) != 4:
        raise ExportError(f"{n.name}: flatten of a rank-{len(s)} tensor")
    return s[1], s[2], s[3]


def _hw(gm, n, calib) -> int:
    s = _shape_of(gm, n.args[0], calib)
    return s[2] * s[3]
