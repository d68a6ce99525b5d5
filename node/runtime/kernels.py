"""Exact torch kernels of the v1 op set (docs/protocol.md 2.3, 2.4): same bits as the scalar
reference (gpumesh.client.core.ops.reference) on CPU and CUDA, whole tensors at a time.

Two layers. `prepare_op(desc, consts, device)` does the per-op work once (transposed int8 weights,
folded int32 bias, per-channel requant vectors on the device) and returns a closure that maps the
op's dynamic input tensor(s) to its output; the executor builds one per op at construction.
`run_op(desc, xs)` prepares from the given tensors and runs (tests, the GPU check). The generic
int64 kernels (`requant`, `_run_generic`) remain for what the fast path does not cover: requant
shifts above FP64_MAX_SHIFT, the add on CUDA without Triton where its int32 form does not fit
(float64 was slower there), and linear ops whose weight is not a constant.

Adapter code (imports torch); imported by the executor and the GPU check only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gpumesh.client.core.ops.rules import chunk_geometry, matmul_geometry
from gpumesh.client.core.ops.types import Opcode, OpDescriptor, ReqMode
from gpumesh.node.runtime import kernels_pos
from gpumesh.node.runtime.requant import FP64_MAX_SHIFT, I32_MAX, I32_MIN, requant, requant_of
from gpumesh.node.runtime.stacking import CONST_INPUTS

_INT_MM_OK: dict[str, bool] = {}

#: Output elements per row block of a linear op with requant on CPU: the int32 accumulator and its
#: float64 temporary of one block (1.5 MiB) stay in the L2 cache instead of streaming through DRAM
#: pass after pass (docs/protocol.md 2.4).
BLOCK_ELEMENTS = 1 << 18

Prepared = Callable[[list[torch.Tensor]], torch.Tensor]


def set_deterministic() -> None:
    """No TF32 anywhere and deterministic kernels (our integer paths are exact regardless; this keeps
    any float fallback honest). Deterministic mode would also fill every new tensor with a marker
    value (a debugging aid against reads of uninitialised memory): every kernel here writes each
    element of its output, so that fill is turned off. It cost a third of a linear op's time on
    4096x128 outputs on the build VM (aten::fill_ on each empty tensor)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Process-wide, once, glibc only: keep freed large blocks in the heap (mmap threshold and trim
    threshold raised to 1 GiB) so that the executor's per-op tensors reuse memory instead of being
    unmapped and page-faulted again on every op. On the 2-core build VM a fresh 16 MiB tensor cost
    ~70 ms of page faults vs 2 ms for the same requant on reused memory. Anything else in the
    process (torch eager included) benefits alike; RSS stays at its peak instead of shrinking."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes
        import platform

        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except OSError:  # pragma: no cover - no glibc: nothing to tune
        pass


def _round8(v: int) -> int:
    return -(-v // 8) * 8


def int_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x int8 [M, K] @ w int8 [N, K]^T -> int32 [M, N], exact (unprepared form).

    torch._int_mm (oneDNN VNNI / CUDA IMMA) when present; operands are zero-padded to M >= 17 and K,
    N multiples of 8 (CUDA's shape rules), which adds exact zeros. Fallback: float64 matmul, exact
    since every product and partial sum is an integer below 2^31 < 2^53."""
    m, k = x.shape
    n = w.shape[0]
    dev = x.device.type
    if _INT_MM_OK.get(dev, hasattr(torch, "_int_mm")):
        # K is padded to a multiple of 8 on every device: CUDA requires it, and torch 2.13's CPU
        # _int_mm returns garbage for K = 1 with a transposed (column-major) weight. CUDA also needs
        # M > 16 and N a multiple of 8.
        kp = max(_round8(k), 16) if dev == "cuda" else _round8(k)
        mp, np_ = (max(m, 17), _round8(n)) if dev == "cuda" else (m, n)
        try:
            if (mp, kp) != (m, k):
                x = F.pad(x, (0, kp - k, 0, mp - m))
            if (np_, kp) != (n, k):
                w = F.pad(w, (0, kp - k, 0, np_ - n))
            out = torch._int_mm(x, w.t())
            return out[:m, :n] if (mp, np_) != (m, n) else out
        except (RuntimeError, NotImplementedError):
            _INT_MM_OK[dev] = False  # remember: do not pay for the failure on every call
            x, w = x[:m, :k], w[:n, :k]
    return (x.to(torch.float64) @ w.to(torch.float64).t()).to(torch.int32)


# ---------------------------------------------------------------------------------------------
# Prepared (fast) path


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class _MatMul:
    """x int8 [M, K] -> x @ W^T int32 [M, N] with W prepared once: on CPU, W^T contiguous [K, N]
    (oneDNN's fast layout: 5-18x faster than the transposed view for conv shapes here, and free of
    the K = 1 bug of the transposed layout; K = 1 is still padded to 8 as a precaution); on CUDA,
    the padded layout verified on an H200 (K multiple of 8 and >= 16, N multiple of 8, M >= 17)."""

    def __init__(self, w: np.ndarray, device: torch.device) -> None:
        n, k = w.shape
        self.n, self.k, self.dev = n, k, device.type
        if self.dev == "cuda":
            self.kp, self.np_ = max(_round8(k), 16), _round8(n)
        else:
            self.kp, self.np_ = (8 if k == 1 else k), n
        wp = np.zeros((self.np_, self.kp), dtype=np.int8)
        wp[:n, :k] = w
        self.wt = torch.from_numpy(np.ascontiguousarray(wp.T)).to(device)  # [Kp, Np] row-major
        self.w_rows = torch.from_numpy(wp).to(device) if self.dev == "cuda" else None
        self.w64 = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        if _INT_MM_OK.get(self.dev, hasattr(torch, "_int_mm")):
            mp = max(m, 17) if self.dev == "cuda" else m
            try:
                xp = F.pad(x, (0, self.kp - self.k, 0, mp - m)) if (mp, self.kp) != (m, self.k) else x
                if self.dev == "cuda":
                    out = torch._int_mm(xp, self.w_rows.t())
                    return out[:m, : self.n] if (mp, self.np_) != (m, self.n) else out
                return torch._int_mm(xp.contiguous(), self.wt)
            except (RuntimeError, NotImplementedError):
                _INT_MM_OK[self.dev] = False
        if self.w64 is None:
            self.w64 = self.wt[: self.k, : self.n].to(torch.float64)
        return (x.to(torch.float64) @ self.w64).to(torch.int32)  # exact: integers below 2^31 < 2^53


def _in_blocks(fn, xs: list[torch.Tensor], step: int, device: torch.device) -> torch.Tensor:
    """fn(*xs), on CPU run per block of `step` rows (axis 0) of the inputs when there is more than
    one block, so each block's temporaries stay in cache (docs/protocol.md 2.4, row blocks). Blocks
    change no bit: every output row depends on its own input rows only."""
    m = xs[0].shape[0]
    if device.type != "cpu" or m <= step:
        return fn(*xs)
    first = fn(*(x[:step] for x in xs))
    out = torch.empty((m, *first.shape[1:]), dtype=first.dtype, device=device)
    out[:step] = first
    for r in range(step, m, step):
        out[r : r + step] = fn(*(x[r : r + step] for x in xs))
    return out


def _prep_linear(d: OpDescriptor, consts: list[np.ndarray], device: torch.device,
                 with_requant: bool = True) -> Prepared:
    """with_requant=False: the int32 accumulators only (the pooled form, `prepare_pooled`)."""
    w, bias = consts[0], consts[1]
    n, k = w.shape
    mm = _MatMul(w, device)
    # wrap32(sum (x - zp) W + b) = wrap32(x @ W^T + wrap32(b - zp * rowsum W)): wrap32 is a ring map
    w64 = w.astype(np.int64)
    b_eff = bias.astype(np.int64) - d.attr("x_zp") * w64.sum(axis=1)
    b_eff = ((b_eff + 2**31) % 2**32 - 2**31).astype(np.int32)
    b32 = torch.from_numpy(b_eff).to(device)
    out_shape = (-1, *d.out.shape[1:])  # the leading dim from the input: units may be stacked
    if d.requant.mode == ReqMode.NONE or not with_requant:
        def run_none(xs):
            acc = mm(xs[0].reshape(-1, k))
            return acc.add_(b32).reshape(out_shape)  # int32 add wraps: wrap32 of the exact sum
        return run_none
    req = requant_of(d, consts[2] if len(consts) > 2 else None, device)
    # |x @ W^T| <= 128 * sum|W| for any int8 x; with |b'| it bounds the sum: no wrap, bias foldable
    reach = 128 * np.abs(w64).sum(axis=1)
    fold = req.fold_bias(b_eff, reach) if (reach + np.abs(b_eff.astype(np.int64)) <= 2**31 - 1).all() else None

    def gemm_requant(x):  # the int32 sum wraps exactly as the spec's wrap32; the requant reads it as is
        acc = mm(x)  # (CUDA + Triton: bias, wrap and requant in one kernel)
        return req.run_folded(acc, fold) if fold is not None else req.int32_bias(acc, b32)

    step = max(1, BLOCK_ELEMENTS // n)
    return lambda xs: _in_blocks(gemm_requant, [xs[0].reshape(-1, k)], step, device).reshape(out_shape)


def _prep_add(d: OpDescriptor, device: torch.device) -> Prepared:
    a = dict(d.attrs)
    s = a["shift"]
    if device.type == "cuda":
        from gpumesh.node.runtime import gpu_requant

        if gpu_requant.available():  # one fused integer pass (Triton)
            args = (a["za"], a["zb"], a["ma"], a["mb"], s, a["zy"], a["lo"], a["hi"])
            return lambda xs: gpu_requant.add(xs[0], xs[1], *args)
    i32 = _add_int32(a)
    if i32 is not None:  # exact integers, no float64 temporaries (docs/protocol.md 2.4)
        c_t = torch.tensor(i32, dtype=torch.int32, device=device)
        ma_i, mb_i, lo, hi = a["ma"], a["mb"], a["lo"], a["hi"]

        def block32(x, y):
            t = x.to(torch.int32)
            torch.add(c_t, t, alpha=ma_i, out=t)
            t.add_(y.to(torch.int32), alpha=mb_i)
            return t.bitwise_right_shift_(s).clamp_(lo, hi).to(torch.int8)
        return _blocked(block32, device)
    if device.type != "cpu" or s > FP64_MAX_SHIFT:
        # CUDA without Triton keeps the int64 add: the float64 form measured 4x slower there (0.22
        # -> 0.91 ms on 128x16x16x128, H200)
        return lambda xs: _run_generic(d, xs)
    # v + zy + 1/2 with v = ((a-za)*ma + (b-zb)*mb) / 2^s, computed with NO rounding at all: every
    # term and partial sum is a multiple of 2^-s below 2^(41-s)... (docs/protocol.md 2.4).
    ma, mb = a["ma"] * 2.0**-s, a["mb"] * 2.0**-s
    c = torch.tensor(a["zy"] + 0.5 - a["za"] * ma - a["zb"] * mb, dtype=torch.float64, device=device)
    lo, hi = a["lo"], a["hi"]

    def block(a, b):
        # int8 -> float64 casts first: float64 ops with an int8 operand take torch's slower
        # mixed-dtype loops (70 -> 53 us on 256x4x4x32)
        f = a.to(torch.float64)
        torch.add(c, f, alpha=ma, out=f)
        f.add_(b.to(torch.float64), alpha=mb).clamp_(lo, hi)
        if lo < 0:
            f.floor_()
        return f.to(torch.int8)

    return _blocked(block, device)


def _add_int32(a: dict) -> int | None:
    """The add in int32: t = x*ma + y*mb + C with C = 2^(s-1) + zy*2^s - za*ma - zb*mb, then
    clamp(t >> s, lo, hi): the spec's ((x-za)*ma + (y-zb)*mb + 2^(s-1)) >> s) + zy exactly (zy*2^s
    commutes with the floor division) when C, x*ma, C + x*ma, y*mb and the sum stay in int32 for
    every int8 x, y (linear in x and y: checked at the corners, exact integers). Returns C or None."""
    s, ma, mb = a["shift"], a["ma"], a["mb"]
    if s > 30:
        return None
    c = (1 << (s - 1)) + a["zy"] * (1 << s) - a["za"] * ma - a["zb"] * mb
    ends = (-128, 127)
    vals = [c] + [x * ma for x in ends] + [c + x * ma for x in ends] + [y * mb for y in ends]
    vals += [c + x * ma + y * mb for x in ends for y in ends]
    if min(vals) < I32_MIN or max(vals) > I32_MAX:
        return None
    return c


def _blocked(block, device: torch.device) -> Prepared:
    """An elementwise two-input op, run per flat block of BLOCK_ELEMENTS on CPU (`_in_blocks`)."""
    def run(xs):
        flat = _in_blocks(block, [xs[0].reshape(-1), xs[1].reshape(-1)], BLOCK_ELEMENTS, device)
        return flat.reshape(xs[0].shape)
    return run


def _prep_im2col(d: OpDescriptor) -> Prepared:
    """A gather into column order (kh, kw, c), by the fastest of three forms measured on the build
    VM (3x3 windows, stride 1): C = 1, a torch.take through a flat index prepared once per batch
    size (512x8x8x1: 129 us vs 141 two-step, 306 strided); 2 <= C < 32, two concatenations, the kw
    column shifts along C then the kh row shifts, each moving runs of >= C bytes (64x32x32x3: 482
    vs 773 take, 826 strided; 256x16x16x8: 620 vs 858 strided); C >= 32, an as_strided window view
    copied by reshape (512x4x4x32: 75 vs 118 two-step). All three are pure data movement."""
    kh, kw, sh, sw, ph, pw, pad = (d.attr(a) for a in ("kh", "kw", "sh", "sw", "ph", "pw", "pad"))
    c = d.inputs[0].type.shape[3]
    _, oh, ow, cols = d.out.shape
    index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def run(xs):
        n = xs[0].shape[0]
        xp = F.pad(xs[0], (0, 0, pw, pw, ph, ph), value=pad) if ph or pw else xs[0].contiguous()
        if c == 1 and kw * c < 16:
            key = (n, xp.device)
            if key not in index:
                index[key] = _im2col_index(n, xp.shape[1], xp.shape[2], c, oh, ow, kh, kw, sh, sw).to(xp.device)
            return torch.take(xp, index[key])
        if c < 32:
            cols_w = [xp[:, :, j : j + (ow - 1) * sw + 1 : sw] for j in range(kw)]
            rows = torch.cat(cols_w, dim=3) if kw > 1 else cols_w[0]  # [n, hp, ow, kw*c]
            parts = [rows[:, i : i + (oh - 1) * sh + 1 : sh] for i in range(kh)]
            return torch.cat(parts, dim=3) if kh > 1 else parts[0].contiguous()
        s0, s1, s2, s3 = xp.stride()
        win = xp.as_strided((n, oh, ow, kh, kw, c), (s0, sh * s1, sw * s2, s1, s2, s3))
        return win.reshape(n, oh, ow, cols)
    return run


def _im2col_index(n: int, hp: int, wp: int, c: int, oh: int, ow: int, kh: int, kw: int, sh: int,
                  sw: int) -> torch.Tensor:
    """Flat positions in a padded [n, hp, wp, c] tensor of every im2col output element, [n, oh, ow,
    kh*kw*c] in (kh, kw, c) column order."""
    i = torch.arange(oh).view(1, oh, 1, 1, 1, 1) * sh + torch.arange(kh).view(1, 1, 1, kh, 1, 1)
    j = torch.arange(ow).view(1, 1, ow, 1, 1, 1) * sw + torch.arange(kw).view(1, 1, 1, 1, kw, 1)
    pos = ((torch.arange(n).view(n, 1, 1, 1, 1, 1) * hp + i) * wp + j) * c + torch.arange(c).view(1, 1, 1, 1, 1, c)
    return pos.reshape(n, oh, ow, kh * kw * c)


def _prep_avgpool(d: OpDescriptor, device: torch.device) -> Prepared:
    _, h, w, _ = d.inputs[0].type.shape
    req = requant_of(d, None, device)
    corr = -d.attr("x_zp") * h * w

    def run(xs):
        acc = xs[0].sum(dim=(1, 2), dtype=torch.int32)  # |sum x| <= 128 * 2^23: no wrap
        if req.fp64:
            return req(acc.to(torch.float64).add_(corr))
        return req(acc.add_(corr) if corr else acc)
    return run


def poolable(lin: OpDescriptor, pool: OpDescriptor) -> bool:
    """Whether `pool` (a maxpool reading linear `lin`'s output) may run on the int32 accumulators
    with the requant after it: requant is non-decreasing in the accumulator (mult >= 0, then a
    clamp), so the max of requantized values is the requant of the max; no padding (a window of
    padding alone would pool to -128 in int8 but to `lo` in the int32 form)."""
    return (lin.opcode == Opcode.LINEAR and lin.requant.mode != ReqMode.NONE and pool.opcode == Opcode.MAXPOOL
            and pool.attr("ph") == 0 and pool.attr("pw") == 0 and len(lin.out.shape) == 4)


def prepare_pooled(lin: OpDescriptor, pool: OpDescriptor, consts: list[np.ndarray],
                   device: torch.device) -> tuple[Prepared, Prepared]:
    """The honest path's form of a linear + requant followed by its only reader, a maxpool
    (`poolable`): (the linear's entry, which passes its input through; the pool's entry, which runs
    GEMM + bias, the pool on the int32 accumulators, then the requant). Its output equals the spec's
    maxpool(requant(acc)) bit for bit; the linear's own int8 output never exists, so the trace path
    (which needs it) keeps the per-op form. Requant runs on a quarter of the elements for a 2x2
    pool; on CPU the three run per block of samples, so the block's temporaries stay in cache."""
    req = requant_of(lin, consts[2] if len(consts) > 2 else None, device)
    acc = _prep_linear(lin, consts, device, with_requant=False)
    _, h, w, c = lin.out.shape
    step = max(1, BLOCK_ELEMENTS // (h * w * c))

    def block(x):
        return req.int32(_run_generic(pool, [acc([x])]))  # _run_generic's maxpool is dtype-agnostic

    # xs[0] of the pool's entry: the linear's input, passed through by the linear's entry
    return (lambda xs: xs[0]), (lambda xs: _in_blocks(block, [xs[0]], step, device))


def prepare_op(d: OpDescriptor, consts: list[np.ndarray], device: torch.device) -> Prepared:
    """The op as a closure over its prepared constants. `consts` are the op's inputs after the first
    (linear: W, bias[, qp]; requant: [qp]) as numpy arrays; other ops take none. The closure takes
    the list of the op's input tensors (only the dynamic ones are read: xs[0], and xs[1] for add)."""
    op = d.opcode
    if op == Opcode.LINEAR:
        return _prep_linear(d, consts, device)
    if op == Opcode.REQUANT:
        req = requant_of(d, consts[0] if consts else None, device)
        return lambda xs: req.int32(xs[0])
    if op == Opcode.ADD:
        return _prep_add(d, device)
    if op == Opcode.IM2COL:
        return _prep_im2col(d)
    if op == Opcode.AVGPOOL:
        return _prep_avgpool(d, device)
    if op == Opcode.SUMREQUANT:
        req = requant_of(d, None, device)
        return lambda xs: req.int32(_sum_wrap32(xs[0]))
    return lambda xs: _run_generic(d, xs)


# ---------------------------------------------------------------------------------------------
# Chunked reductions (docs/protocol.md 2.2, 5.7.7): exact integer torch ops only.


def _chunks(x: torch.Tensor, dim: int, q: int, reduce) -> torch.Tensor:
    """`reduce(view, dim + 1)` over chunks of `q` along `dim` of `x` (the last chunk may be shorter):
    the whole chunks as one [.., G', q, ..] view (no copy), the short tail as its own chunk, stacked
    along `dim`. `reduce(t, axis)` drops `axis`; it sees chunks in order."""
    k = x.shape[dim]
    full = k // q
    parts = []
    if full:
        head = x.narrow(dim, 0, full * q)
        parts.append(reduce(head.unflatten(dim, (full, q)), dim + 1))
    if full * q < k:
        parts.append(reduce(x.narrow(dim, full * q, k - full * q).unsqueeze(dim), dim + 1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _chunkmax(d: OpDescriptor, x: torch.Tensor) -> torch.Tensor:
    """[.., G, 2] int32: per chunk of q values (or pairs), the first maximal value and its global
    index (pairs: the index the winning pair carries). torch.argmax returns the first maximal index
    (documented), on CPU and CUDA."""
    _, q, _ = chunk_geometry(d)
    if d.attr("pairs"):
        both = x.movedim(-1, 0)  # [2, .., K]: values, indices
    else:
        ids = torch.arange(x.shape[-1], dtype=torch.int32, device=x.device)
        both = torch.stack([x.to(torch.int32), ids.expand(x.shape)])

    def reduce(t, axis):  # t [2, .., G', q]: the winner's value and index of each chunk
        k = torch.argmax(t[0], dim=axis - 1, keepdim=True)
        return torch.stack([torch.gather(t[0], axis - 1, k), torch.gather(t[1], axis - 1, k)]).squeeze(axis)

    return _chunks(both, both.dim() - 1, q, reduce).movedim(0, -1).contiguous()


def _pairargmax(x: torch.Tensor) -> torch.Tensor:
    k = torch.argmax(x[..., 0], dim=-1, keepdim=True)
    return torch.gather(x[..., 1], -1, k).squeeze(-1)


def _chunksum(d: OpDescriptor, x: torch.Tensor) -> torch.Tensor:
    """[N, C, G] int32: per channel, the sum of (x - x_zp) over each chunk of q of the H*W positions.
    |sum| <= 255 * q < 2^31 for any q <= 2^23: exact in int32."""
    n, h, w, c = x.shape
    p, q, g = chunk_geometry(d)
    sums = _chunks(x.reshape(n, h * w, c), 1, q, lambda t, axis: t.sum(dim=axis, dtype=torch.int32))
    zp = d.attr("x_zp")
    if zp:
        counts = torch.full((g,), q, dtype=torch.int32, device=x.device)
        counts[-1] = p - (g - 1) * q
        sums = sums - zp * counts.view(1, g, 1)
    return sums.transpose(1, 2).contiguous()


def _sum_wrap32(x: torch.Tensor) -> torch.Tensor:
    """wrap32 of the exact sum along the last axis (int64 sum, explicit two's-complement wrap)."""
    s = x.sum(dim=-1, dtype=torch.int64)
    return (((s + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).to(torch.int32)



# ---------------------------------------------------------------------------------------------
# Integer transformer ops (docs/protocol.md 2.2-2.3): exact integer (or provably exact float64) ops.


def _transformer_op(d: OpDescriptor, xs: list[torch.Tensor]) -> torch.Tensor:
    """matmul, lut, mul, gather. Units stacked along axis 0 keep their rows: matmul views both
    operands as [batch, rows, cols] from the descriptor's last two dims, so a stacked rank-2 input
    is a batch of units; the other ops are elementwise or per id."""
    op, x, y = d.opcode, xs[0], xs[1]
    if op == Opcode.SOFTMAX:
        return _softmax(d, x, y)
    if op == Opcode.LAYERNORM:
        return _layernorm(d, x, y, xs[2])
    if op == Opcode.ROPE:
        return kernels_pos.rope(d, x, y)
    if op == Opcode.LUT:  # y[i] = T[x[i] + 128]
        return y[x.to(torch.int64) + 128]
    if op == Opcode.GATHER:  # rows of the table; an id outside [0, V) gives a zero row
        v = y.shape[0]
        ids = x.to(torch.int64)
        ok = (ids >= 0) & (ids < v)
        rows = y[ids.clamp(0, v - 1)]
        return torch.where(ok.unsqueeze(-1), rows, torch.zeros((), dtype=torch.int8, device=x.device))
    za, zb, q = d.attr("za"), d.attr("zb"), d.requant
    if op == Opcode.MUL:  # |(a - za) * (b - zb)| <= 65025: exact in int64
        return requant((x.to(torch.int64) - za) * (y.to(torch.int64) - zb), q.mult, q.shift, q.zp, q.lo, q.hi)
    # matmul in float64: every product and every partial sum, in any order, is an integer of
    # magnitude <= 65025 * K < 2^31 < 2^53, so the result is exact on CPU and CUDA (no TF32 in fp64)
    _, _, _, _, ta, tb = matmul_geometry(d)
    a = x.reshape(-1, *d.inputs[0].type.shape[-2:]).to(torch.float64) - za
    b = y.reshape(-1, *d.inputs[1].type.shape[-2:]).to(torch.float64) - zb
    acc = torch.matmul(a.transpose(-1, -2) if ta else a, b.transpose(-1, -2) if tb else b).to(torch.int32)
    if q.mode != ReqMode.NONE:
        acc = requant(acc, q.mult, q.shift, q.zp, q.lo, q.hi)
    return acc.reshape(-1, *d.out.shape[1:])


def softmax_quotient(e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """floor((512 e + S) / (2 S)) as int32 from float64 integers 0 <= e <= 2^15 <= S < 2^31 (exact: _softmax)."""
    return torch.floor_((512.0 * e + s).div_(2.0 * s)).to(torch.int32)


def _softmax(d: OpDescriptor, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Integer softmax over the last axis (docs/protocol.md 2.2.1, torch form 2.3): the masked row
    max in int8/int16, the clamped table lookup of M - x, the row sum and one division in float64,
    exact: every e is an integer <= 2^15, every partial sum (any order) an integer < 2^31 < 2^53,
    and floor(fl((512 e + S) / (2 S))) is the integer floor because the quotient is below 2^9 (a
    correctly rounded division errs by <= 2^-44) while a non-integer quotient is >= 1/(2S) > 2^-31
    from every integer. Stacked units keep their query positions: flat row r has t = r % R for
    every multiple of R rows."""
    length, rows = d.out.shape[-1], d.out.shape[-2]
    one = float(1 << 15)
    xr = x.reshape(-1, length)
    e_of = table.to(torch.float64).clamp(0, one)
    e_of[0] = one  # e(0) = 2^15 whatever the table holds, so S >= 2^15
    masked = None
    if d.attr("causal"):
        t = torch.arange(xr.shape[0], device=x.device) % rows + d.attr("off")
        masked = torch.arange(length, device=x.device).unsqueeze(0) > t.unsqueeze(1)
        xw = xr.to(torch.int16).masked_fill(masked, -129)  # never the max: column 0 is unmasked
        top = xw.amax(dim=-1, keepdim=True)
        dist = (top - xw).clamp_(max=255)  # masked: M + 129 > 255, clamped, then zeroed below
    else:
        top = xr.amax(dim=-1, keepdim=True).to(torch.int16)
        dist = top - xr.to(torch.int16)
    e = torch.take(e_of, dist.to(torch.int64))
    if masked is not None:
        e = e.masked_fill_(masked, 0.0)
    s = e.sum(dim=-1, keepdim=True)  # exact: an integer <= L * 2^15 < 2^31
    y = softmax_quotient(e, s).sub_(128).clamp_(max=127)
    if masked is not None:
        y = y.masked_fill_(masked, -128)
    return y.to(torch.int8).reshape(x.shape)


def isqrt64(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) of int64 0 <= v < 2^62: the float64 estimate is within 1 of it (v's rounding
    to float64 and the correctly rounded sqrt move it by far less than 1 below 2^31), then one
    integer correction each way: s*s and (s+1)^2 stay below 2^63."""
    s = torch.sqrt(v.to(torch.float64)).floor_().to(torch.int64)
    s = s - (s * s > v).to(torch.int64)
    return s + ((s + 1) * (s + 1) <= v).to(torch.int64)


def _layernorm(d: OpDescriptor, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """LayerNorm / RMSNorm over the last axis (docs/protocol.md 2.2.2), int64 throughout:
    |c| < 2^8 D, Q = sum c^2 < 2^16 D^3 <= 2^58, V = Q + eps D^3 < 2^62, |2 c rD| < 2^42."""
    dd = d.out.shape[-1]
    v = x.reshape(-1, dd).to(torch.int64) - d.attr("x_zp")
    c = dd * v if d.attr("rms") else dd * v - v.sum(dim=-1, keepdim=True)
    sigma = isqrt64((c * c).sum(dim=-1, keepdim=True) + d.attr("eps") * dd**3)
    rd = math.isqrt(dd << 24)
    z = torch.div(2 * rd * c + sigma, (2 * sigma).clamp_(min=1), rounding_mode="floor")
    z = torch.where(sigma == 0, torch.zeros((), dtype=torch.int64, device=x.device), z)
    acc = z * gamma.to(torch.int64) + beta.to(torch.int64)
    acc = ((acc + (1 << 31)) & ((1 << 32) - 1)) - (1 << 31)  # wrap32 (|acc| < 2^26 + 2^31)
    q = d.requant
    return requant(acc, q.mult, q.shift, q.zp, q.lo, q.hi).reshape(x.shape)


def run_op(d: OpDescriptor, xs: list[torch.Tensor]) -> torch.Tensor:
    """Output tensor of one op from its input tensors (dtypes and shapes as the descriptor says)."""
    pos = CONST_INPUTS.get(d.opcode, ())
    consts = [_np(xs[i]) for i in pos if i < len(xs)]
    return prepare_op(d, consts, xs[0].device)(xs)


# ---------------------------------------------------------------------------------------------
# Generic (unprepared) kernels


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


def _run_generic(d: OpDescriptor, xs: list[torch.Tensor]) -> torch.Tensor:
    """The int64 kernels of every op (the fast path's fallback and the CUDA path of add/maxpool)."""
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
        wins = _windows(d, x, -128)
        first = next(wins)
        second = next(wins, None)
        if second is None:
            return first.clone()
        out = torch.maximum(first, second)
        for s in wins:
            torch.maximum(out, s, out=out)
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
        return r.reshape(-1, *d.out.shape[1:])
    if op == Opcode.CHUNKMAX:
        return _chunkmax(d, x)
    if op == Opcode.PAIRARGMAX:
        return _pairargmax(x).reshape(-1, *d.out.shape[1:])
    if op == Opcode.CHUNKSUM:
        return _chunksum(d, x)
    if op == Opcode.SUMREQUANT:
        q = d.requant
        return requant(_sum_wrap32(x), q.mult, q.shift, q.zp, q.lo, q.hi)
    if op in (Opcode.MATMUL, Opcode.LUT, Opcode.MUL, Opcode.GATHER, Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.ROPE):
        return _transformer_op(d, xs)
    if op == Opcode.RESHAPE:
        return x.reshape(-1, *d.out.shape[1:])  # stacked units: row-major, so unit u stays block u
    if op == Opcode.TRANSPOSE:
        return x.permute(*d.perm).contiguous()
    raise NotImplementedError(op)  # pragma: no cover - Opcode is closed
