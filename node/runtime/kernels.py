"""Exact torch kernels of the v1 op set (docs/spec/ops.md 2.3): same bits as the scalar reference
(gpumesh.client.core.ops.reference) on CPU and CUDA, whole tensors at a time.

Adapter code (imports torch); imported by the executor and the GPU check only.
"""

from __future__ import annotations

import torch

from gpumesh.client.core.ops.types import Opcode, OpDescriptor, ReqMode

_INT_MM_OK: dict[str, bool] = {}


def set_deterministic() -> None:
    """No TF32 anywhere and deterministic kernels (our integer paths are exact regardless; this keeps
    any float fallback honest)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def _round8(v: int) -> int:
    return -(-v // 8) * 8


def int_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x int8 [M, K] @ w int8 [N, K]^T -> int32 [M, N], exact.

    torch._int_mm (oneDNN VNNI / CUDA IMMA) when present; operands are zero-padded to M >= 17 and K,
    N multiples of 8 (CUDA's shape rules), which adds exact zeros. Fallback: float64 matmul, exact
    since every product and partial sum is an integer below 2^31 < 2^53."""
    m, k = x.shape
    n = w.shape[0]
    dev = x.device.type
    if _INT_MM_OK.get(dev, hasattr(torch, "_int_mm")):
        # K is padded to a multiple of 8 on every device: CUDA requires it, and torch 2.13's CPU
        # _int_mm returns garbage for K = 1 (found by the property tests). CUDA also needs M > 16
        # and N a multiple of 8.
        kp = max(_round8(k), 16) if dev == "cuda" else _round8(k)
        mp, np_ = (max(m, 17), _round8(n)) if dev == "cuda" else (m, n)
        try:
            if (mp, kp) != (m, k):
                x = torch.nn.functional.pad(x, (0, kp - k, 0, mp - m))
            if (np_, kp) != (n, k):
                w = torch.nn.functional.pad(w, (0, kp - k, 0, np_ - n))
            out = torch._int_mm(x, w.t())
            return out[:m, :n] if (mp, np_) != (m, n) else out
        except (RuntimeError, NotImplementedError):
            _INT_MM_OK[dev] = False  # remember: do not pay for the failure on every call
            x, w = x[:m, :k], w[:n, :k]
    return (x.to(torch.float64) @ w.to(torch.float64).t()).to(torch.int32)


def requant(acc: torch.Tensor, mult, shift, zp: int, lo: int, hi: int) -> torch.Tensor:
    """clamp(((acc*mult + 2^(shift-1)) >> shift) + zp, lo, hi) on int64; mult/shift are ints or int64
    tensors broadcast along the last axis. In-place int64 ops: this is memory-bound, and a per-channel
    shift that is the same on every channel (what the export emits) takes the scalar-shift path."""
    a = acc.to(torch.int64)
    a.mul_(mult)
    if not isinstance(shift, int) and bool((shift == shift[0]).all()):
        shift = int(shift[0])
    if isinstance(shift, int):
        a.add_(1 << (shift - 1)).bitwise_right_shift_(shift)
    else:
        a.add_(torch.ones_like(shift) << (shift - 1)).bitwise_right_shift_(shift)
    if zp:
        a.add_(zp)
    return a.clamp_(lo, hi).to(torch.int8)


def _req_params(d: OpDescriptor, qp: torch.Tensor | None):
    q = d.requant
    if q.mode == ReqMode.PER_CHANNEL:
        t = qp.to(torch.int64)
        return t[:, 0], t[:, 1], q
    return q.mult, q.shift, q


def _pad_nhwc(x: torch.Tensor, ph: int, pw: int, value: int) -> torch.Tensor:
    if ph == 0 and pw == 0:
        return x
    n, h, w, c = x.shape
    out = torch.full((n, h + 2 * ph, w + 2 * pw, c), value, dtype=x.dtype, device=x.device)
    out[:, ph : ph + h, pw : pw + w, :] = x
    return out


def _windows(d: OpDescriptor, x: torch.Tensor, pad_value: int):
    """Yield the (kh, kw) strided slices [N, OH, OW, C] of the padded input."""
    kh, kw, sh, sw, ph, pw = (d.attr(a) for a in ("kh", "kw", "sh", "sw", "ph", "pw"))
    _, oh, ow, _ = d.out.shape
    xp = _pad_nhwc(x, ph, pw, pad_value)
    for i in range(kh):
        for j in range(kw):
            yield xp[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]


def run_op(d: OpDescriptor, xs: list[torch.Tensor]) -> torch.Tensor:
    """Output tensor of one op from its input tensors (dtypes and shapes as the descriptor says)."""
    op = d.opcode
    x = xs[0]
    if op == Opcode.LINEAR:
        w, bias = xs[1], xs[2]
        lead, k = x.shape[:-1], x.shape[-1]
        acc = int_matmul(x.reshape(-1, k), w)
        zp = d.attr("x_zp")
        if zp:
            acc = acc - zp * w.sum(dim=1, dtype=torch.int32)
        acc = acc + bias  # int32 + int32 wraps mod 2^32: wrap32 of the exact sum
        if d.requant.mode != ReqMode.NONE:
            m, s, q = _req_params(d, xs[3] if len(xs) > 3 else None)
            acc = requant(acc, m, s, q.zp, q.lo, q.hi)
        return acc.reshape(*lead, w.shape[0])
    if op == Opcode.REQUANT:
        m, s, q = _req_params(d, xs[1] if len(xs) > 1 else None)
        return requant(x, m, s, q.zp, q.lo, q.hi)
    if op == Opcode.ADD:
        a = dict(d.attrs)
        t = (x.to(torch.int64) - a["za"]) * a["ma"] + (xs[1].to(torch.int64) - a["zb"]) * a["mb"]
        t = (t + (1 << (a["shift"] - 1))) >> a["shift"]
        return (t + a["zy"]).clamp_(a["lo"], a["hi"]).to(torch.int8)
    if op == Opcode.RELU:
        return torch.clamp(x, min=d.attr("zp"))
    if op == Opcode.IM2COL:
        # column order (kh, kw, c): concatenating the window slices along C gives exactly that.
        return torch.cat(list(_windows(d, x, d.attr("pad"))), dim=3)
    if op == Opcode.MAXPOOL:
        out = None
        for s in _windows(d, x, -128):
            out = s.clone() if out is None else torch.maximum(out, s)
        return out
    if op == Opcode.AVGPOOL:
        acc = x.sum(dim=(1, 2), dtype=torch.int32)
        zp = d.attr("x_zp")
        if zp:
            acc = acc - zp * x.shape[1] * x.shape[2]
        q = d.requant
        return requant(acc, q.mult, q.shift, q.zp, q.lo, q.hi)
    if op == Opcode.ARGMAX:
        r = torch.argmax(x, dim=-1).to(torch.int32)  # documented: first maximal index
        return r.reshape(d.out.shape)
    if op == Opcode.RESHAPE:
        return x.reshape(d.out.shape)
    if op == Opcode.TRANSPOSE:
        return x.permute(*d.perm).contiguous()
    raise NotImplementedError(op)  # pragma: no cover - Opcode is closed
