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

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gpumesh.client.core.ops.rules import chunk_geometry, matmul_geometry
from gpumesh.client.core.ops.types import Opcode, OpDescriptor, ReqMode
from gpumesh.node.runtime import kernels_cpu, kernels_pos
from gpumesh.node.runtime.requant import FP64_MAX_SHIFT, I32_MAX, I32_MIN, requant, requant_of
from gpumesh.node.runtime.stacking import CONST_INPUTS

_INT_MM_OK: dict[str, bool] = {}

#: Output elements per row block of a linear op with requant on CPU: the int32 accumulator and its
#: float64 temporary of one block (1.5 MiB) stay in the L2 cache instead of streaming through DRAM
#: pass after pass (docs/protocol.md 2.4).
BLOCK_ELEMENTS = 1 << 18
#: A linear whose W has at least BIG_WEIGHT entries runs its GEMM per GEMM_ELEMENTS outputs (32 MiB
#: of int32) and only its requant per BLOCK_ELEMENTS (`_prep_linear`).
BIG_WEIGHT = 1 << 18
GEMM_ELEMENTS = 1 << 23

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
            out = torch._int_mm(_row_major(x), w.t())
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
        if self.dev == "cpu" and (self.np_, self.kp) == (n, k):  # no padding: only the transposed copy below
            wp = np.asarray(w, dtype=np.int8)
        else:
            wp = np.zeros((self.np_, self.kp), dtype=np.int8)
            wp[:n, :k] = w
        self.wt = torch.from_numpy(np.ascontiguousarray(wp.T)).to(device)  # [Kp, Np] row-major
        self.w_rows = torch.from_numpy(wp).to(device) if self.dev == "cuda" else None
        self.w64 = None

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x @ W^T; on CPU with `out` (int32 [M, N], row-major) written there (returned: `out`,
        or a new tensor where _int_mm is unavailable)."""
        m = x.shape[0]
        if _INT_MM_OK.get(self.dev, hasattr(torch, "_int_mm")):
            mp = max(m, 17) if self.dev == "cuda" else m
            try:
                xp = F.pad(x, (0, self.kp - self.k, 0, mp - m)) if (mp, self.kp) != (m, self.k) else x
                if self.dev == "cuda":
                    out = torch._int_mm(xp, self.w_rows.t())
                    return out[:m, : self.n] if (mp, self.np_) != (m, self.n) else out
                if out is not None:
                    return torch._int_mm(_row_major(xp), self.wt, out=out)
                return torch._int_mm(_row_major(xp), self.wt)  # not contiguous(): see _row_major
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
    # row sums without an int64 copy of W (8x its bytes: the largest item of a GPT-2-sized
    # program's preparation); |w| in int16 (the abs of -128 does not fit int8)
    b_eff = bias.astype(np.int64) - d.attr("x_zp") * w.sum(axis=1, dtype=np.int64)
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
    reach = 128 * np.abs(w, dtype=np.int16).sum(axis=1, dtype=np.int64)
    fold = req.fold_bias(b_eff, reach) if (reach + np.abs(b_eff.astype(np.int64)) <= 2**31 - 1).all() else None

    if fold is not None and fold[0] == "jit":  # the fused CPU requant (kernels_cpu.requant_i32)
        return _linear_jit(mm, k, n, fold[1:], out_shape)

    def finish(acc):  # the int32 sum wraps exactly as the spec's wrap32; the requant reads it as is
        return req.run_folded(acc, fold) if fold is not None else req.int32_bias(acc, b32)

    def gemm_requant(x):
        return finish(mm(x))  # (CUDA + Triton: bias, wrap and requant in one kernel)

    step = max(1, BLOCK_ELEMENTS // n)
    if device.type != "cpu" or k * n < BIG_WEIGHT:
        return lambda xs: _in_blocks(gemm_requant, [xs[0].reshape(-1, k)], step, device).reshape(out_shape)
    # a large W: one GEMM per GEMM_ELEMENTS outputs (oneDNN prepares W once per call: a GEMM per
    # cache-sized row block cost twice the GEMM at GPT-2's [2048, 768] x [768, 2304]), then the
    # requant per row block of the fresh accumulators (in place, the same per-element arithmetic)
    rows = max(step, GEMM_ELEMENTS // n)

    def big(xs):
        x = xs[0].reshape(-1, k)
        if x.shape[0] <= step:
            return gemm_requant(x).reshape(out_shape)
        out = torch.empty((x.shape[0], n), dtype=torch.int8, device=x.device)
        for r0 in range(0, x.shape[0], rows):
            acc = mm(x[r0 : r0 + rows])
            for r in range(0, acc.shape[0], step):  # a chunk need not be whole requant blocks
                r1 = min(r + step, acc.shape[0])
                out[r0 + r : r0 + r1] = finish(acc[r:r1])
        return out.reshape(out_shape)
    return big


def _linear_jit(mm: _MatMul, k: int, n: int, vecs: tuple, out_shape: tuple) -> Prepared:
    """A linear with its folded requant on CPU through the fused kernel: per block of rows the GEMM
    into one reused int32 buffer, then the requant straight from it into the output. A W below
    BIG_WEIGHT: blocks of about BLOCK_ELEMENTS outputs, so the buffer stays in cache (the byte
    GPT's [2048, 256] x [256, 1024], one thread: 1.50 ms as one GEMM, 1.14 in blocks of 256 rows);
    a larger W: blocks of GEMM_ELEMENTS (oneDNN prepares W once per call, `_prep_linear`). The
    same integers as the torch forms: the exact int32 sums, then the same requant."""
    rows = max(1, (BLOCK_ELEMENTS if k * n <= BIG_WEIGHT else GEMM_ELEMENTS) // n)

    def run(xs):
        x = xs[0].reshape(-1, k)
        m = x.shape[0]
        out = torch.empty((m, n), dtype=torch.int8)
        buf = torch.empty((min(m, rows), n), dtype=torch.int32)
        o = out.numpy()
        for r in range(0, m, rows):
            xb = x[r : r + rows]
            acc = mm(xb, out=buf[: xb.shape[0]])
            kernels_cpu.requant_i32(acc.numpy(), o[r : r + xb.shape[0]], *vecs)
        return out.reshape(out_shape)
    return run


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
        if device.type == "cpu" and kernels_cpu.enabled():  # the fused CPU kernel: one pass
            def fused(xs):
                x, y = xs[0].reshape(-1), xs[1].reshape(-1)
                out = torch.empty(x.shape, dtype=torch.int8)
                kernels_cpu.add_i32(x.numpy(), y.numpy(), out.numpy(), ma_i, mb_i, i32, s, lo, hi)
                return out.view(xs[0].shape)
            return fused

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
    if op in (Opcode.MATMUL, Opcode.MUL, Opcode.LUT, Opcode.GATHER, Opcode.SOFTMAX, Opcode.LAYERNORM):
        return _prep_transformer(d, consts, device)
    if op == Opcode.ROPE:
        return kernels_pos.prep_rope(d, consts[0], device)
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
    """The transformer ops from their full input lists (tables as tensors): the prepared forms
    below, prepared on the spot. Units stacked along axis 0 keep their rows: matmul views both
    operands as [batch, rows, cols] from the descriptor's last two dims, so a stacked rank-2 input
    is a batch of units; the other ops are elementwise, per id or per row."""
    op, x, y = d.opcode, xs[0], xs[1]
    if op == Opcode.ROPE:
        return kernels_pos.rope(d, x, y)
    consts = [_np(xs[i]) for i in CONST_INPUTS.get(op, ())]
    return _prep_transformer(d, consts, x.device)(xs)


def _prep_transformer(d: OpDescriptor, consts: list[np.ndarray], device: torch.device) -> Prepared:
    """matmul, mul, lut, gather, softmax, layernorm with their tables (weights) prepared once."""
    op = d.opcode
    if op == Opcode.MATMUL:
        return _prep_matmul(d, device)
    if op == Opcode.MUL:
        return _prep_mul(d, device)
    if op == Opcode.LUT:
        return _prep_lut(consts[0], device)
    if op == Opcode.GATHER:
        return _prep_gather(consts[0], device)
    if op == Opcode.SOFTMAX:
        return _prep_softmax(d, consts[0], device)
    return _prep_layernorm(d, consts[0], consts[1], device)


def _prep_matmul(d: OpDescriptor, device: torch.device) -> Prepared:
    """matmul through the int8 GEMM (`_int_mm`), one call per batch entry (head), with the zero
    points applied afterwards (docs/protocol.md 2.3):
      sum_k (a - za)(b - zb) = A.B + R[m] + C[n],  R = K*za*zb - zb*rowsum(a),  C = -za*colsum(b).
    No intermediate leaves int32, so nothing relies on wrap-around: |A.B| <= 128*128*K = 2^14 K
    (int8 operands), |R| <= 2^14 K + 2^14 K = 2^15 K, |A.B + R| <= 3 * 2^14 K < 2^31 for K <= MAX_K
    = 2^15, and A.B + R + C is the exact accumulator, |acc| <= 65,025 K < 2^31 (2.2). Then the
    prepared requant (2.4) in place. On CPU the batch entries run in blocks of about
    BLOCK_ELEMENTS outputs so the int32 block stays in cache through the requant."""
    _, m, k, n, ta, tb = matmul_geometry(d)
    a_shape, b_shape = d.inputs[0].type.shape[-2:], d.inputs[1].type.shape[-2:]
    za, zb, q = d.attr("za"), d.attr("zb"), d.requant
    req = requant_of(d, None, device) if q.mode != ReqMode.NONE else None
    out_dtype = torch.int32 if req is None else torch.int8
    corner = k * za * zb
    step = max(1, BLOCK_ELEMENTS // (m * n)) if device.type == "cpu" else None
    small = device.type == "cpu" and m <= SMALL_M and k <= F32_MAX_K

    def products(ab: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        """A.B + R[m] + C[n] (int32) of one block of entries."""
        got = _grouped_int_mm(ab, bb, bool(za)) if small else None
        if got is not None:  # block-diagonal int8 GEMMs on the operands as they lie
            acc, cols = got
            rows = ab.sum(dim=-1, keepdim=True, dtype=torch.int32) if zb or corner else None
        elif small and _f32_exact():  # float32 on the views: exact (F32_MAX_K), no copies, one bmm
            af, bf = ab.to(torch.float32), bb.to(torch.float32)
            # row and column sums in float32: integers of magnitude <= 128 K <= 2^17, exact; the
            # column sums as one more row of ones in the same bmm (a strided sum cost as much)
            rows = af.sum(dim=-1, keepdim=True) if zb or corner else None
            if za:
                ones = torch.ones((af.shape[0], 1, k), dtype=torch.float32, device=af.device)
                both = torch.bmm(torch.cat([af, ones], dim=1), bf)
                acc, cols = both[:, :m].to(torch.int32), both[:, m:]
            else:
                acc, cols = torch.bmm(af, bf).to(torch.int32), None
        else:
            acc = _batched_int_mm(ab, bb)
            rows = ab.sum(dim=-1, keepdim=True, dtype=torch.int32) if zb or corner else None
            cols = bb.sum(dim=-2, keepdim=True, dtype=torch.int32) if za else None
        if rows is not None:
            acc.add_(rows.to(torch.int32).mul_(-zb).add_(corner))
        if cols is not None:
            acc.add_(cols.to(torch.int32).mul_(-za))
        return acc

    few = device.type == "cpu" and m <= SMALL_M and k <= 1 << 15  # |partial sums| < 2^31 (2.2)
    form = req.scalar_i32() if few and req is not None else None
    if form is not None:  # a decode step's few rows: products and requant in one fused kernel
        def fused_small(xs):
            a = xs[0].reshape(-1, *a_shape)
            a = _row_major(a.transpose(-1, -2) if ta else a)  # [batch, M, K]
            b = _row_major(xs[1].reshape(-1, *b_shape))  # tb: b^T [batch, N, K]; else b [batch, K, N]
            out = torch.empty((a.shape[0], m, n), dtype=torch.int8)
            kernels_cpu.matmul_small(a.numpy(), b.numpy(), bool(tb), out.numpy(), za, zb, form)
            return out.reshape(-1, *d.out.shape[1:])
        return fused_small
    jit = (device.type == "cpu" and req is not None and req.jit and req.pre is not None and req.i32 is not None
           and not small and k % 8 == 0 and _INT_MM_OK.get("cpu", hasattr(torch, "_int_mm")))
    if jit:  # the fused CPU requant: per block of entries their GEMMs into one reused int32 buffer, then the kernel
        vecs = req._vecs(n)

        def fused(xs):
            a = xs[0].reshape(-1, *a_shape)
            b = xs[1].reshape(-1, *b_shape)
            a = _row_major(a.transpose(-1, -2) if ta else a)  # [batch, M, K], row-major
            b = _row_major(b.transpose(-1, -2) if tb else b)  # [batch, K, N], row-major
            batch = a.shape[0]
            rows = a.sum(dim=-1, keepdim=True, dtype=torch.int32).mul_(-zb).add_(corner) if zb or corner else None
            cols = b.sum(dim=-2, keepdim=True, dtype=torch.int32).mul_(-za) if za else None
            out = torch.empty((batch, m, n), dtype=torch.int8)
            # blocks of entries of about BLOCK_ELEMENTS outputs: one requant call per block (its
            # parallel form splits it over torch's threads; one call per head stayed serial)
            blk = max(1, BLOCK_ELEMENTS // (m * n))
            buf = torch.empty((min(batch, blk), m, n), dtype=torch.int32)
            o = out.numpy()
            for h0 in range(0, batch, blk):
                h1 = min(batch, h0 + blk)
                for i in range(h0, h1):
                    torch._int_mm(a[i], b[i], out=buf[i - h0])
                bb = buf[: h1 - h0]
                if rows is not None:
                    bb.add_(rows[h0:h1])
                if cols is not None:
                    bb.add_(cols[h0:h1])
                kernels_cpu.requant_i32(bb.view(-1, n).numpy(), o[h0:h1].reshape(-1, n), *vecs)
            return out.reshape(-1, *d.out.shape[1:])
        return fused

    def run(xs):
        a = xs[0].reshape(-1, *a_shape)
        b = xs[1].reshape(-1, *b_shape)
        a = a.transpose(-1, -2) if ta else a  # [batch, M, K] (a view)
        b = b.transpose(-1, -2) if tb else b  # [batch, K, N] (a view)
        batch = a.shape[0]
        out = torch.empty((batch, m, n), dtype=out_dtype, device=a.device)
        for h0 in range(0, batch, step or batch):
            h1 = min(batch, h0 + (step or batch))
            acc = products(a[h0:h1], b[h0:h1])
            if req is None:
                out[h0:h1] = acc
            else:
                req.int32_(acc, out=out[h0:h1])
        return out.reshape(-1, *d.out.shape[1:])
    return run


#: Entries per block-diagonal GEMM of `_grouped_int_mm` (a decode step's heads x batch).
GROUP = 16


def _grouped_int_mm(a: torch.Tensor, b: torch.Tensor, cols: bool):
    """(A.B int32 [batch, M, N], the column sums of b int32 [batch, 1, N] or None) for entries of
    few rows (CPU, M <= SMALL_M), by one `_int_mm` per GROUP entries on b as it lies in memory, or
    None where b's layout or a dimension does not suit (the caller's float32 form then):
    - b row-major per entry ([K, N], entries consecutive: P.V over a [T, Dh] cache): G entries of b
      are one row-major [G K, N] matrix; a's rows go on the block diagonal of a zero [G M, G K]
      int8 matrix (block g: entry g's [M, K]), and with `cols` G rows of ones (row g: ones on block
      g) give b's column sums in the same GEMM;
    - b the transpose of a row-major [N, K] per entry (q.K^T over a [T, Dh] cache): G entries of b^T
      are one [G N, K] matrix, times a^T of the G entries side by side [K, G M] (and one column of
      ones: the row sums of b^T, i.e. b's column sums): entry g's product is block (g, g).
    Every output is an exact integer sum of int8 products (the zeros of the other blocks add
    nothing; |sum| <= 2^14 K, 128 K for the ones), so the bits are the per-entry GEMM's; the
    blocks off the diagonal are G - 1 times the needed work, cheaper than converting the whole
    cache to float32 (byte GPT decode, 32 entries [1, 64] x [64, 256], one thread: 139 -> 69 us;
    [1, 256] x [256, 64]: 152 -> 70 us). Inner dimensions are kept multiples of 8 (torch's CPU
    `_int_mm` K = 1 bug: 2.3)."""
    batch, m, k = a.shape
    n = b.shape[-1]
    sb = b.stride()
    step_ok = batch == 1 or sb[0] == k * n
    by_rows = step_ok and sb[-1] == 1 and (sb[-2] == n or k == 1)
    by_cols = not by_rows and step_ok and sb[-2] == 1 and (sb[-1] == k or n == 1)
    sizes = [min(GROUP, batch - g0) for g0 in range(0, batch, GROUP)]
    if not (by_rows or by_cols) or (by_rows and any(g * k % 8 for g in sizes)) or (by_cols and k % 8):
        return None
    acc = torch.empty((batch, m, n), dtype=torch.int32, device=a.device)
    cs = torch.empty((batch, 1, n), dtype=torch.int32, device=a.device) if cols else None
    extra = 1 if cols else 0
    for g0 in range(0, batch, GROUP):
        g = min(GROUP, batch - g0)
        ag = a[g0 : g0 + g]
        idx = torch.arange(g, device=a.device)
        if by_rows:
            bd = torch.zeros((g, m + extra, g, k), dtype=torch.int8, device=a.device)
            bd[idx, :m, idx, :] = ag
            if cols:
                bd[idx, m, idx, :] = 1
            r = torch._int_mm(bd.view(g * (m + extra), g * k), _row_major(b[g0 : g0 + g].reshape(g * k, n)))
            r = r.view(g, m + extra, n)
            acc[g0 : g0 + g] = r[:, :m]
            if cols:
                cs[g0 : g0 + g] = r[:, m:]
        else:
            qa = ag.permute(2, 0, 1).reshape(k, g * m)
            if cols:
                qa = torch.cat([qa, torch.ones((k, 1), dtype=torch.int8, device=a.device)], dim=1)
            bt = b[g0 : g0 + g].transpose(-1, -2).reshape(g * n, k)
            r = torch._int_mm(_row_major(bt), _row_major(qa))  # [G N, G M (+1)]
            acc[g0 : g0 + g] = torch.diagonal(r[:, : g * m].view(g, n, g, m), dim1=0, dim2=2).permute(2, 1, 0)
            if cols:
                cs[g0 : g0 + g, 0] = r[:, g * m].view(g, n)
    return acc, cs


def _batched_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int32 [B, M, N] = a [B, M, K] @ b [B, K, N] (int8, any strides), exact. CPU: per entry
    `_int_mm` on contiguous operands ([K, N] row-major, oneDNN's fast layout), K zero-padded to a
    multiple of 8 (torch 2.13's CPU `_int_mm` K = 1 bug; zero columns add exact zeros). CUDA: per
    entry `int_matmul` (its padded shapes). Fallback: float64 bmm, exact (integers < 2^31 < 2^53)."""
    batch, m, k = a.shape
    n = b.shape[-1]
    dev = a.device.type
    if _INT_MM_OK.get(dev, hasattr(torch, "_int_mm")):
        try:
            if dev == "cuda":
                return torch.stack([int_matmul(_row_major(a[i]), _row_major(b[i].t())) for i in range(batch)])
            kp = _round8(k)
            ac = F.pad(a, (0, kp - k)) if kp != k else _row_major(a)
            bc = F.pad(b, (0, 0, 0, kp - k)) if kp != k else _row_major(b)
            out = torch.empty((batch, m, n), dtype=torch.int32, device=a.device)
            for i in range(batch):
                torch._int_mm(ac[i], bc[i], out=out[i])
            return out
        except (RuntimeError, NotImplementedError):
            _INT_MM_OK[dev] = False
    return torch.bmm(a.to(torch.float64), b.to(torch.float64)).to(torch.int32)


#: Float32 GEMM of int8 operands is exact for K <= F32_MAX_K: every product is an integer of
#: magnitude <= 128 * 128 = 2^14 and every partial sum, in any order, one of magnitude <= 2^14 K <=
#: 2^24, so each IEEE operation (multiply, add or fused multiply-add) has a representable exact
#: result and returns it. `_prep_matmul` takes it on CPU for M <= SMALL_M rows per entry (a decode
#: step's query row), where one `_int_mm` call per entry, a row-major copy of a strided operand
#: (K^T of a cache) and a strided int8 column sum cost more than the GEMM (GPT-2-small shape, 96
#: entries [1, 256] x [256, 64], one thread: 1.34 -> 0.6 ms).
F32_MAX_K = 1 << 10
SMALL_M = 8


def _f32_exact() -> bool:
    """Whether float32 matmuls run in IEEE float32 here (no TF32 / bf16 reduced-precision modes)."""
    mk = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return (torch.get_float32_matmul_precision() == "highest"
            and getattr(mk, "fp32_precision", "none") in ("none", "ieee"))


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """t with the canonical row-major strides, copied if needed. `contiguous()` is not enough: it
    keeps any stride of a size-1 dim (a transposed [K, 1] view is [1, K] with strides (1, 1)),
    and `_int_mm` on CPU read such an operand as column-major (garbage for M = 1, ta = 1)."""
    want, acc = [], 1
    for size in reversed(t.shape):
        want.append(acc)
        acc *= size
    if list(t.stride()) == want[::-1]:
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def _prep_mul(d: OpDescriptor, device: torch.device) -> Prepared:
    """(a - za) * (b - zb) in int32 (|t| <= 255 * 255 = 65,025), then the prepared requant (2.4),
    per flat block on CPU."""
    za, zb = d.attr("za"), d.attr("zb")
    req = requant_of(d, None, device)

    def block(a, b):
        t = a.to(torch.int32)
        u = b.to(torch.int32)
        if za:
            t.sub_(za)
        if zb:
            u.sub_(zb)
        return req.int32_(t.mul_(u))
    return _blocked(block, device)


def _prep_lut(table: np.ndarray, device: torch.device) -> Prepared:
    """y = T[x + 128]: the bytes of x read as uint8 are x + 256 for x < 0 and x otherwise, so the
    table rolled by 128 (R[u] = T[(u + 128) mod 256]) is indexed by them directly."""
    rolled = torch.from_numpy(np.roll(np.asarray(table, dtype=np.int8), 128)).to(device)
    if device.type == "cpu":
        return _lut_pairs(rolled)

    def run(xs):
        x = xs[0]
        return rolled[x.view(torch.uint8).to(torch.int32)]
    return run


def _lut_pairs(rolled: torch.Tensor) -> Prepared:
    """The CPU lut two bytes at a time: a table of 65,536 int16 entries (128 KiB, in cache) whose
    entry for the 16-bit word u holds the two bytes R[byte 0 of u], R[byte 1 of u] (built through the
    same byte view, so it holds for either byte order), indexed by `index_select` with the words of
    x + 2^15 (int16 read signed) as int32: half the lookups of the byte table, and index_select
    instead of advanced indexing (2M elements, one thread: 8.9 -> 0.9 ms). Pure data movement: the
    same bytes as R[x]. An odd element count or a non-contiguous x takes the byte table through
    index_select."""
    r = rolled.cpu().numpy().view(np.uint8)
    words = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    pairs = np.ascontiguousarray(r[words]).view(np.int16).reshape(-1)
    pairs = torch.from_numpy(np.roll(pairs, 1 << 15))  # index = signed word + 2^15

    pairs_np = pairs.numpy() if kernels_cpu.enabled() else None  # read by the fused kernel (lut16)

    def run(xs):
        x = xs[0]
        if x.numel() % 2 or not x.is_contiguous():
            return rolled.index_select(0, x.reshape(-1).view(torch.uint8).to(torch.int32)).view(x.shape)
        if pairs_np is not None:
            out = torch.empty(x.shape, dtype=torch.int8)
            kernels_cpu.lut16(x.reshape(-1).view(torch.int16).numpy(), pairs_np, out.view(-1).view(torch.int16).numpy())
            return out
        idx = x.reshape(-1).view(torch.int16).to(torch.int32).add_(1 << 15)
        return pairs.index_select(0, idx).view(torch.int8).view(x.shape)
    return run


def _prep_gather(table: np.ndarray, device: torch.device) -> Prepared:
    """Rows of the table by id (`index_select` with the int32 ids, those outside [0, V) read row
    0), then the rows of those ids set to 0: the spec's zero row. No host sync (CUDA graphs)."""
    tab = torch.from_numpy(np.ascontiguousarray(table)).to(device)
    v, dd = tab.shape

    def run(xs):
        ids = xs[0]
        ok = (ids >= 0) & (ids < v)
        rows = tab.index_select(0, torch.where(ok, ids, 0).reshape(-1)).view(*ids.shape, dd)
        return rows.masked_fill_(ok.logical_not_().unsqueeze(-1), 0)
    return run


#: Masked logits are moved to x - MASK_SHIFT in the int32 softmax so that M - x lands in a zero
#: region [257, 767] of the prepared exp table (M and x int8: M - x + 512 in [257, 767]).
MASK_SHIFT = 512


def softmax_coeffs(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (a, b) = (fl(256 / S), fl(1/2 + fl(1 / (4 S)))) for `softmax_quotient`."""
    return 256.0 / s, (0.25 / s).add_(0.5)


def softmax_quotient(e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """floor((512 e + S) / (2 S)) as int32 from float64 integers 0 <= e <= 2^15 <= S <= 2^30, as
    the softmax kernel computes it: floor(fl(e * a + b)) with `softmax_coeffs` (exact: `_prep_softmax`)."""
    a, b = softmax_coeffs(s)
    return (e * a).add_(b).floor_().to(torch.int32)


def _prep_softmax(d: OpDescriptor, table: np.ndarray, device: torch.device) -> Prepared:
    """Integer softmax over the last axis (docs/protocol.md 2.2.1; torch form 2.3). x is viewed as
    [G, R, L] (G groups of R query rows: heads, batch, stacked units) and run in chunks of rows
    [t0, t1) of G' groups at a time (on CPU about BLOCK_ELEMENTS elements, so the temporaries stay
    in cache). Causal: a chunk's columns at and above c1 = min(L, t1 + off) are masked for every
    one of its rows, so only [0, c1) is computed and the rest is -128 (about a third less work at
    R = L, off = 0). Per chunk:
    - the clamped exp table, prepared once as float64 [768]: e(0) = 2^15, e(d) = clamp(E[d], 0,
      2^15) for 1 <= d <= 255, 0 above (masked logits land there);
    - causal: x + (0 or -512) in int32 (the mask of the chunk's rows, prepared once per chunk
      shape); the row max M over it is the masked max (column 0 is never masked, and x - 512 is
      below every int8); non-causal: the int8 row max;
    - d = M - x (int32; unmasked in [0, 255], masked in [257, 767]), e = table[d] by
      `index_select` (float64), S = sum e (float64: every partial sum is an integer < 2^31 < 2^53,
      exact in any order);
    - q = floor(v) with v = e * a + b, a = fl(256 / S), b = fl(1/2 + fl(1/(4S))) (`softmax_coeffs`),
      two in-place passes. Exact: floor(N / 2S) = floor((N + 1/2) / 2S) for the integer N = 512 e
      + S, and (N + 1/2) / 2S = (2N + 1) / 4S, an odd numerator over an even denominator, lies at
      least 1/(4S) >= 2^-31 from every integer (S <= 2^29). Computed, each of a, e*a, b and the sum
      has relative error <= 2^-53 on terms below 2^9 (e <= 2^15 <= S, so e*a <= 256): |fl(v) - v|
      < 2^-42, far inside that margin, so floor(fl(v)) = q. v > 0, so the uint8 cast's truncation
      is the floor; a masked term (e = 0) gives q = 0, i.e. -128;
    - y = min(q, 255) - 128 as int8: the float is clamped to 255 before the cast, and flipping the
      top bit of the byte subtracts 128 (mod 256)."""
    length, rows_r = d.out.shape[-1], d.out.shape[-2]
    causal, off = d.attr("causal"), d.attr("off")
    e = np.clip(np.asarray(table, dtype=np.int64), 0, 1 << 15)
    e[0] = 1 << 15
    tab = np.zeros(3 * 256, dtype=np.float64)
    tab[:256] = e
    tab_t = torch.from_numpy(tab).to(device)
    bias_cache: dict[tuple[int, int, int], torch.Tensor] = {}
    cache_ok = rows_r * length <= 1 << 22  # the patterns of all chunks together: at most 16 MiB

    def mask_bias(t0: int, t1: int, c1: int) -> torch.Tensor | None:
        """int32 [t1 - t0, c1]: -512 where query row t masks column j (j > t + off), or None when
        no column below c1 is masked for these rows."""
        if t0 + off + 1 >= c1:
            return None
        key = (t0, t1, c1)
        if key in bias_cache:
            return bias_cache[key]
        t = torch.arange(t0, t1, device=device) + off
        bias = (torch.arange(c1, device=device).unsqueeze(0) > t.unsqueeze(1)).to(torch.int32).mul_(-MASK_SHIFT)
        if cache_ok:
            bias_cache[key] = bias
        return bias

    def chunk(x: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
        """x int8 [g, r, c] (a strided view), out uint8 [g, r, c] (a view of the output)."""
        # int32 throughout (index_select's index type): a cast, then same-dtype ops in place;
        # torch's mixed-dtype loops (int8 + int32, int32 - int8) measured 1.4-2x slower
        xw = x.to(torch.int32)
        if bias is not None:
            top = xw.add_(bias).amax(dim=-1, keepdim=True)
        else:
            top = x.amax(dim=-1, keepdim=True).to(torch.int32)
        dist = torch.sub(top, xw, out=xw)
        ev = tab_t.index_select(0, dist.view(-1)).view(dist.shape)
        a, b = softmax_coeffs(ev.sum(dim=-1, keepdim=True))
        # two in-place passes (a broadcast addcmul measured 1.8x slower); two roundings: the bound holds
        v = ev.mul_(a).add_(b).clamp_(max=255.0)
        torch.bitwise_xor(v.to(torch.uint8), 128, out=out)

    if device.type == "cpu" and kernels_cpu.enabled():  # the fused CPU kernel: chunk's arithmetic per row
        def fused(xs):
            xg = xs[0].reshape(-1, rows_r, length)
            out = torch.empty(xg.shape, dtype=torch.uint8)
            kernels_cpu.softmax(xg.numpy(), out.numpy(), tab, bool(causal), int(off))
            return out.view(torch.int8).reshape(xs[0].shape)
        return fused

    def run(xs):
        x = xs[0]
        xg = x.reshape(-1, rows_r, length)
        groups = xg.shape[0]
        out = torch.empty(xg.shape, dtype=torch.uint8, device=x.device)
        if device.type == "cpu":  # chunks of BLOCK_ELEMENTS / 2 (float64 temporaries): 12x[256,256]
            block = max(1, BLOCK_ELEMENTS // 2)  # causal 1.20 ms vs 1.38 at BLOCK_ELEMENTS, 1 thread
            rc = min(rows_r, max(1, block // (groups * length)))
            gc = max(1, block // (rc * length))
        else:
            rc, gc = rows_r, groups
        for t0 in range(0, rows_r, rc):
            t1 = min(rows_r, t0 + rc)
            c1 = min(length, t1 + off) if causal else length
            if c1 < length:
                out[:, t0:t1, c1:] = 128  # masked for every row of the chunk: y = -128
            bias = mask_bias(t0, t1, c1) if causal else None
            for g0 in range(0, groups, gc):
                g1 = min(groups, g0 + gc)
                chunk(xg[g0:g1, t0:t1, :c1], bias, out[g0:g1, t0:t1, :c1])
        return out.view(torch.int8).reshape(x.shape)
    return run


def isqrt64(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) of int64 0 <= v < 2^62: the float64 estimate is within 1 of it (v's rounding
    to float64 and the correctly rounded sqrt move it by far less than 1 below 2^31), then one
    integer correction each way: s*s and (s+1)^2 stay below 2^63."""
    s = torch.sqrt(v.to(torch.float64)).floor_().to(torch.int64)
    s = s - (s * s > v).to(torch.int64)
    return s + ((s + 1) * (s + 1) <= v).to(torch.int64)


def _prep_layernorm(d: OpDescriptor, gamma: np.ndarray, beta: np.ndarray, device: torch.device) -> Prepared:
    """LayerNorm / RMSNorm over the last axis (docs/protocol.md 2.2.2; torch form 2.3), per block of
    rows on CPU, in float64 with integer row statistics:
    - v = x - x_zp as float64 (exact), T = sum v, s2 = sum v^2: integers below 255^2 * 16,384 < 2^30,
      exact in any order; per row in int64: Q = D^2 s2 - D T^2 (the identity of 2.2.2, each term
      < 2^58), V = Q + eps D^3 < 2^62, sigma = isqrt64(V);
    - z = floor(w), w = v * A + B with A = fl(D * fl(rD / sigma)), B = fl(beta' - fl(T * fl(rD /
      sigma))), beta' = fl(1/2 + fl(1 / (4 sigma))) (RMSNorm: T = 0; sigma = 0: A = B = 0, z = 0).
      Exact: floor((2 c rD + sigma) / (2 sigma)) = floor(X) with X = c rD / sigma + 1/2 + 1/(4 sigma)
      = (2N + 1) / (4 sigma) (N the integer numerator: the same half-integer argument as softmax),
      at least 1/(4 sigma) from every integer. With P = 2^8 D rD / sigma (>= |D v| rD / sigma and
      >= |T| rD / sigma), the computed w differs from X by at most ~2^-53 (6.1 P + |X| + 2), and
      sigma |X| <= |c| rD + sigma (|c_k| <= sigma since c_k^2 <= V): 4 sigma |w - X| <= 2^-53 *
      4 (6.1 * 2^8 D rD + 2^8 D rD + 3 sigma) < 2^-53 * 30 * 2^41 + 2^-53 * 12 * 2^31 < 2^-7 (D <=
      2^14, rD <= 2^19, sigma < 2^31): w is on X's side of every integer;
    - acc = z * gamma + beta in float64: an integer, |z gamma| <= (rD + 1) 128, and where that plus
      max |beta| stays below 2^31 (checked here; otherwise the int64 form `_layernorm`) it does not
      wrap, so it is the spec's wrap32 value, exact; then the float64 requant of 2.4 (its proof
      takes any exact integer |A| < 2^33)."""
    dd = d.out.shape[-1]
    zp, rms, eps = d.attr("x_zp"), d.attr("rms"), d.attr("eps")
    rd = math.isqrt(dd << 24)
    req = requant_of(d, None, device)
    beta_max = int(np.abs(np.asarray(beta, dtype=np.int64)).max())
    if not (req.fp64 or req.f53 is not None) or 128 * (rd + 1) + beta_max > I32_MAX:
        g_t, b_t = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (gamma, beta))
        return lambda xs: _layernorm(d, xs[0], g_t, b_t)
    g_np, b_np = (np.ascontiguousarray(a, dtype=np.float64) for a in (gamma, beta))
    g64, b64 = (torch.from_numpy(a).to(device) for a in (g_np, b_np))  # on CPU: the same memory
    eps_term = eps * dd**3
    d2 = dd * dd

    def row_sums(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, s2) per row, int64. D <= 1024: from x in float32, where every partial sum of x^2
        (<= 2^14 D <= 2^24) and of x (<= 2^7 D) is an integer float32 holds exactly, so both sums
        are exact in any order (a float64 product pass measured 4x slower here); then T = sum x -
        D zp and s2 = sum x^2 - 2 zp sum x + D zp^2 in int64. Larger D: from v in float64
        (integers < 2^30)."""
        if dd <= 1024:
            xf = x.to(torch.float32)
            sx = xf.sum(dim=-1).to(torch.int64)
            sxx = xf.mul_(xf).sum(dim=-1).to(torch.int64)
            if not zp:
                return sx, sxx
            return sx - dd * zp, sxx.sub_(sx * (2 * zp)).add_(dd * zp * zp)
        return v.sum(dim=-1).to(torch.int64), torch.linalg.vecdot(v, v).to(torch.int64)

    def block(x: torch.Tensor) -> torch.Tensor:
        v = x.to(torch.float64)
        if zp:
            v.sub_(zp)
        ti, s2 = row_sums(x, v)
        if rms:
            big_v = s2.mul_(d2)
            t = None
        else:
            t = ti.to(torch.float64)
            big_v = s2.mul_(d2).sub_(ti.mul_(ti).mul_(dd))
        sigma = isqrt64(big_v.add_(eps_term) if eps_term else big_v).to(torch.float64)
        pos = sigma > 0
        alpha = torch.where(pos, rd / sigma, 0.0)
        beta_h = torch.where(pos, (0.25 / sigma).add_(0.5), 0.0)
        b_row = beta_h if t is None else beta_h.sub_(t.mul_(alpha))
        # in place, two passes each (a broadcast addcmul measured 2-3x slower)
        w = v.mul_(alpha.mul_(dd).unsqueeze(1)).add_(b_row.unsqueeze(1)).floor_()
        return req.exact_(w.mul_(g64).add_(b64))  # exact integers: z * gamma + beta, no wrap (checked above)

    def few_rows(x: torch.Tensor) -> torch.Tensor:
        """`block` for a few rows (a decode step's): the same row statistics with Python integers
        (exact: math.isqrt is floor(sqrt) of the exact V) and the same float64 coefficients as
        Python floats (IEEE double, the same operations in the same order: rD / sigma, 0.25 /
        sigma + 0.5, beta' - T * alpha, alpha * D), so the same bits for a fifth of the torch calls
        (each a few microseconds on tensors of a few elements)."""
        v = x.to(torch.float64)
        if zp:
            v.sub_(zp)
        ti, s2 = row_sums(x, v)
        a_rows, b_rows = [], []
        for t_i, s_i in zip(ti.tolist(), s2.tolist(), strict=True):
            big_v = d2 * s_i - (0 if rms else dd * t_i * t_i) + eps_term
            sigma = float(math.isqrt(big_v))
            if sigma > 0:
                alpha = rd / sigma
                beta_h = 0.25 / sigma + 0.5
                b_rows.append(beta_h if rms else beta_h - float(t_i) * alpha)
                a_rows.append(alpha * dd)
            else:
                a_rows.append(0.0), b_rows.append(0.0)
        col = functools.partial(torch.tensor, dtype=torch.float64, device=x.device)
        w = v.mul_(col(a_rows).unsqueeze(1)).add_(col(b_rows).unsqueeze(1)).floor_()
        return req.exact_(w.mul_(g64).add_(b64))

    step = max(1, BLOCK_ELEMENTS // dd)
    form = _ln_jit_form(req) if device.type == "cpu" and kernels_cpu.enabled() else None
    if form is not None:  # the fused CPU kernel: block's arithmetic in one pass per row
        args = (zp, bool(rms), float(rd), eps_term, g_np, b_np, form)

        def fused(xs):
            x = xs[0].reshape(-1, dd)
            out = torch.empty(x.shape, dtype=torch.int8)
            kernels_cpu.layernorm(x.numpy(), out.view(torch.uint8).numpy(), *args)
            return out.reshape(xs[0].shape)
        return fused
    if device.type == "cpu":
        def run(xs):
            x = xs[0].reshape(-1, dd)
            fn = few_rows if x.shape[0] <= FEW_ROWS else block
            return _in_blocks(fn, [x], step, device).reshape(xs[0].shape)
        return run
    return lambda xs: _in_blocks(block, [xs[0].reshape(-1, dd)], step, device).reshape(xs[0].shape)


def _ln_jit_form(req) -> tuple | None:
    """The requant operands of kernels_cpu.layernorm: `Requant.f53_`'s or `Requant.fp64_`'s
    pre-clamped per-tensor form, or None (the torch forms)."""
    if req.f53 is not None:
        a_lo, a_hi, m, c, lo = req.f53
        return True, a_lo, a_hi, m, float(c), lo & 0xFF, False
    if req.fp64 and req.pre is not None and isinstance(req.m, float) and isinstance(req.pre[0], int):
        return False, float(req.pre[0]), float(req.pre[1]), req.m, req.c, 0, req.floor
    return None


#: Rows up to which the CPU layernorm computes its row statistics in Python (`few_rows`).
FEW_ROWS = 64


def _layernorm(d: OpDescriptor, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """LayerNorm / RMSNorm, int64 throughout (the form for a beta that can make acc wrap, or a
    requant shift above FP64_MAX_SHIFT): |c| < 2^8 D, Q = sum c^2 < 2^16 D^3 <= 2^58, V = Q + eps
    D^3 < 2^62, |2 c rD| < 2^42."""
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
    if op == Opcode.TOPK:
        return kernels_pos.topk(d, x)
    if op == Opcode.RESHAPE:
        return x.reshape(-1, *d.out.shape[1:])  # stacked units: row-major, so unit u stays block u
    if op == Opcode.TRANSPOSE:
        return x.permute(*d.perm).contiguous()
    if op == Opcode.CONCAT:  # docs/protocol.md 2.2.5; stacked units: axis >= 1 (stacking.op_blocker)
        return torch.cat([x, xs[1]], dim=d.attr("axis"))
    if op == Opcode.SLICE:
        return x.narrow(d.attr("axis"), d.attr("start"), d.attr("len")).contiguous()
    raise NotImplementedError(op)  # pragma: no cover - Opcode is closed
