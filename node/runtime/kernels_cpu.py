"""Fused CPU kernels (numba): one pass per op where the torch forms of gpumesh.node.runtime.kernels
take five to fifteen (docs/protocol.md 2.4, "Fused CPU kernels"). Each kernel computes EXACTLY the
arithmetic of the torch form it replaces, operation for operation: the same exact integers (in
int64, where no value can overflow: the same bounds as the int32 forms), the same float64
operations in the same order on the same operands, no fast-math (no reassociation, no fused
multiply-add contraction). So the exactness proofs of those forms carry over unchanged, and the
differential tests run both forms against the scalar reference.

- `requant_i32`: the pre-clamped all-int32 requant of an int32 accumulator, per channel (the
  linear's folded bias form and `Requant.int32_`): clamp, A * mult + c, >> shift, int8;
- `layernorm`: LayerNorm / RMSNorm rows: integer row statistics, isqrt, the float64 coefficients,
  floor, z * gamma + beta and the float64 requant (`_f53_form` or the pre-clamped fp64 form);
- `softmax`: the integer softmax rows (causal or not) with the clamped exp table;
- `add_i32`: the add in its int32 form;
- `matmul_small`: a decode step's few-row matmuls, products and requant in one kernel;
- `lut16`: the lut through kernels._lut_pairs's table of byte pairs.

`enabled()` is False where numba does not import or GPUMESH_CPU_KERNELS=torch is set (the
operator's switch back to the torch forms; the tests run both); the callers then keep the torch
forms. Compiled on first use and cached on disk (numba's cache next to this file, or the user's
cache folder where that is read-only).

Adapter code; imported by gpumesh.node.runtime.kernels and .requant on CPU only.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

try:  # pragma: no branch
    import numba
    from numba import njit, prange, types
    from numba.extending import intrinsic

    # OpenMP first: with torch loaded it is torch's own libgomp (the same soname), so the kernels'
    # parallel regions and torch's GEMMs share one thread pool instead of two pools spinning
    # against each other on the same cores (a separate pool measured slower than one thread here)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
except ImportError:  # pragma: no cover - an install without numba keeps the torch forms
    numba = None

#: The switch: GPUMESH_CPU_KERNELS=torch keeps the torch forms (`enabled`).
ENV = "GPUMESH_CPU_KERNELS"
_FORCED: bool | None = None


def _compiler(**options):
    """numba's njit with its on-disk cache (next to this file, else the user's cache folder), or
    without where neither folder is writable (numba refuses `cache=True` then: the kernels compile
    in each process instead of failing the import)."""
    def decorate(fn):
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(cache=False, **options)(fn)
    return decorate


#: Why the kernels are off although numba imports (their self-check failed), or None.
BROKEN: str | None = None
_CHECKED = False
log = logging.getLogger("gpumesh.kernels")


def enabled() -> bool:
    """Whether the CPU paths use these kernels: numba imports, they passed their self-check
    (`_self_check`, once per process) and GPUMESH_CPU_KERNELS is not `torch`; `force` overrides
    the switch (tests). Read when an op is prepared (an Executor built)."""
    if numba is None:
        return False
    on = _FORCED if _FORCED is not None else os.environ.get(ENV, "numba").strip().lower() != "torch"
    return on and _self_check()


def _self_check() -> bool:
    """Compile and run every kernel and its parallel form once on small inputs against numpy's
    integer arithmetic (or the serial form), the first time they would be used: a numba or LLVM
    that cannot compile or run them here, or one that gets a bit wrong, turns the kernels off for
    the process (`BROKEN`, one warning) and the executor keeps the torch forms. A few tenths of a
    second with numba's cache filled (about 4 s with it empty: the compilation itself)."""
    global _CHECKED, BROKEN
    if _CHECKED:
        return BROKEN is None
    _CHECKED = True
    try:
        _check_kernels()
    except Exception as e:  # noqa: BLE001 - any failure of the compiler or a kernel: the torch forms
        BROKEN = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        log.warning("fused CPU kernels off (%s): the executor uses the torch forms (same bits, slower)", BROKEN)
    return BROKEN is None


def _check_kernels() -> None:
    rng = np.random.default_rng(0)
    i32 = np.int32
    acc = rng.integers(-2**20, 2**20, (6, 5), dtype=np.int32)
    lo, hi, mu, c, sh = (np.full(5, v, i32) for v in (-2**19, 2**19, 3001, 1 << 21, 22))
    want = ((np.clip(acc.astype(np.int64), -2**19, 2**19) * 3001 + (1 << 21)) >> 22).astype(np.int8)
    x8 = rng.integers(-128, 128, (6, 40), dtype=np.int8)
    b8 = rng.integers(-128, 128, (6, 7, 40), dtype=np.int8)
    a8 = rng.integers(-128, 128, (6, 2, 40), dtype=np.int8)
    mm_want = np.einsum("imk,ink->imn", a8.astype(np.int64) + 3, b8.astype(np.int64) - 5)
    mm_want = ((np.clip(mm_want, -2**19, 2**19) * 3001 + (1 << 21)) >> 22).astype(np.int8)
    tab = np.zeros(768)
    tab[:256] = np.maximum(0, 32768 - 128 * np.arange(256))
    words = rng.integers(-2**15, 2**15, 9).astype(np.int16)
    pairs = rng.integers(-2**15, 2**15, 65536).astype(np.int16)
    g, b = rng.integers(-128, 128, 40).astype(np.float64), rng.integers(-999, 999, 40).astype(np.float64)
    ln_args = (3, False, float(math.isqrt(40 << 24)), 40**3, g, b, False, -128 * 4096.0, 127 * 4096.0, 2.0**-12,
               0.5, 0, True)
    ys = x8.reshape(-1)[::-1].copy()
    add_want = np.clip((x8.reshape(-1).astype(np.int64) * 3 + ys.astype(np.int64) * 5 + 4) >> 3, -100, 90)
    first = None  # the serial softmax and layernorm bytes, which the parallel forms must repeat
    for parts in (0, 2):  # the serial kernels, then the parallel forms in two blocks

        def call(serial, par, *args, parts=parts):
            return par(*args, parts) if parts else serial(*args)

        out = np.empty((6, 5), np.int8)
        call(_requant_i32, _requant_i32_par, acc, out, lo, hi, mu, c, sh)
        if not (out == want).all():
            raise ArithmeticError("requant_i32 differs from the integer formula")
        out = np.empty(6 * 40, np.int8)
        call(_add_i32, _add_i32_par, x8.reshape(-1), ys, out, 3, 5, 4, 3, -100, 90)
        if not (out == add_want).all():
            raise ArithmeticError("add_i32 differs from the integer formula")
        out = np.empty(9, np.int16)
        call(_lut16, _lut16_par, words, pairs, out)
        if not (out == pairs[words.astype(np.int64) + 2**15]).all():
            raise ArithmeticError("lut16 differs from the table")
        for nt, bb in ((True, b8), (False, np.ascontiguousarray(np.swapaxes(b8, 1, 2)))):
            out = np.empty((6, 2, 7), np.int8)
            call(_mm_small, _mm_small_par, a8, bb, nt, out, i32(-3), i32(5), i32(-2**19), i32(2**19), i32(3001),
                 i32(1 << 21), i32(22))
            if not (out == mm_want).all():
                raise ArithmeticError("matmul_small differs from the integer formula")
        sm, ln = np.empty((6, 1, 40), np.uint8), np.empty((6, 40), np.uint8)
        call(_softmax, _softmax_par, x8.reshape(6, 1, 40), sm, tab, True, 20)
        call(_layernorm, _layernorm_par, x8, ln, *ln_args)
        if not (sm[:, 0, 21:] == 128).all():
            raise ArithmeticError("softmax's causal mask")
        first = first or (sm.tobytes(), ln.tobytes())
        if (sm.tobytes(), ln.tobytes()) != first:
            raise ArithmeticError("a parallel form differs from its serial kernel")


def force(on: bool | None) -> None:
    """Tests: True / False use / skip these kernels for the ops prepared from now on; None, the
    environment's choice again."""
    global _FORCED
    _FORCED = on


if numba is not None:
    _jit = _compiler(nogil=True, boundscheck=False, error_model="numpy")

    @intrinsic
    def _muladd_shr32(typingctx, a, m, c, s):  # pragma: no cover - compiled
        """(a * m + c) >> s in int32 arithmetic (numba's own integer typing widens int32 products
        to int64, which halves the vector lanes). Only where the caller's bounds keep a * m and
        a * m + c inside int32 for every operand (then each is the exact integer) and 0 <= s < 32."""
        sig = types.int32(types.int32, types.int32, types.int32, types.int32)

        def codegen(context, builder, signature, args):
            x, mm, cc, ss = args
            return builder.ashr(builder.add(builder.mul(x, mm), cc), ss)
        return sig, codegen

    @_jit
    def _requant_i32(acc, out, a_lo, a_hi, mult, c, shift):  # pragma: no cover - compiled
        rows, n = acc.shape
        for r in range(rows):
            for j in range(n):
                a = min(max(acc[r, j], a_lo[j]), a_hi[j])
                out[r, j] = np.int8(_muladd_shr32(a, mult[j], c[j], shift[j]))

    @intrinsic
    def _mac32(typingctx, s, x, y):  # pragma: no cover - compiled
        """s + x * y in int32 arithmetic, where the caller's bound keeps every partial sum inside
        int32 (`matmul_small`)."""
        sig = types.int32(types.int32, types.int32, types.int32)

        def codegen(context, builder, signature, args):
            ss, xx, yy = args
            return builder.add(ss, builder.mul(xx, yy))
        return sig, codegen

    @_jit
    def _mm_nt(a, bt, out, za, zb, a_lo, a_hi, mult, c, shift):  # pragma: no cover - compiled
        batch, m, k = a.shape
        n = bt.shape[1]
        av = np.empty(k, dtype=np.int32)
        for i in range(batch):
            for r in range(m):
                for q in range(k):
                    av[q] = np.int32(a[i, r, q]) - za
                for j in range(n):
                    s = np.int32(0)
                    for q in range(k):
                        s = _mac32(s, av[q], np.int32(bt[i, j, q]) - zb)
                    s = min(max(s, a_lo), a_hi)
                    out[i, r, j] = np.int8(_muladd_shr32(s, mult, c, shift))

    @_jit
    def _mm_nn(a, b, out, za, zb, a_lo, a_hi, mult, c, shift):  # pragma: no cover - compiled
        batch, m, k = a.shape
        n = b.shape[2]
        acc = np.empty(n, dtype=np.int32)
        for i in range(batch):
            for r in range(m):
                acc[:] = 0
                for q in range(k):
                    x = np.int32(a[i, r, q]) - za
                    for j in range(n):
                        acc[j] = _mac32(acc[j], x, np.int32(b[i, q, j]) - zb)
                for j in range(n):
                    s = min(max(acc[j], a_lo), a_hi)
                    out[i, r, j] = np.int8(_muladd_shr32(s, mult, c, shift))

    @_jit
    def _layernorm(x, out, zp, rms, rd, eps_term, g, b, f53, a_lo, a_hi, m, c, lo8, floor_):  # pragma: no cover
        rows, dd = x.shape
        d2 = np.int64(dd) * dd
        for r in range(rows):
            t = np.int64(0)
            s2 = np.int64(0)
            for j in range(dd):
                v = np.int64(x[r, j]) - zp
                t += v
                s2 += v * v
            big = s2 * d2 if rms else s2 * d2 - t * t * dd
            big += eps_term
            s = np.int64(math.floor(math.sqrt(np.float64(big))))  # within 1 of isqrt (kernels.isqrt64)
            if s * s > big:
                s -= 1
            if (s + 1) * (s + 1) <= big:
                s += 1
            sigma = np.float64(s)
            if sigma > 0:
                alpha = rd / sigma
                bh = 0.25 / sigma + 0.5
                brow = bh if rms else bh - np.float64(t) * alpha
                aa = alpha * dd
            else:
                aa = 0.0
                brow = 0.0
            for j in range(dd):
                v = np.float64(np.int64(x[r, j]) - zp)
                w = np.floor(v * aa + brow)
                acc = min(max(w * g[j] + b[j], a_lo), a_hi)
                if f53:  # N 2^-shift >= 0, truncation = floor; + lo mod 256 gives y's bits
                    out[r, j] = np.uint8(np.uint8(acc * m + c) + lo8)
                else:  # c + A m in [lo, hi + 1): floor where lo < 0, truncation otherwise
                    y = acc * m + c
                    out[r, j] = np.uint8(np.int8(np.floor(y) if floor_ else y))

    @_jit
    def _softmax(x, out, tab, causal, off):  # pragma: no cover - compiled
        groups, rows, length = x.shape
        e = np.empty(length, dtype=np.float64)
        for g in range(groups):
            for t in range(rows):
                c1 = min(length, t + off + 1) if causal else length
                c1 = max(c1, 1)  # column 0 is never masked
                top = np.int64(x[g, t, 0])
                for j in range(1, c1):
                    top = max(top, np.int64(x[g, t, j]))
                s = 0.0
                for j in range(c1):
                    e[j] = tab[top - np.int64(x[g, t, j])]
                    s += e[j]  # integers < 2^31: exact in any order
                a = 256.0 / s
                b = 0.25 / s + 0.5
                for j in range(c1):
                    v = min(e[j] * a + b, 255.0)
                    out[g, t, j] = np.uint8(v) ^ np.uint8(128)
                for j in range(c1, length):
                    out[g, t, j] = np.uint8(128)

    @_jit
    def _add_i32(x, y, out, ma, mb, c, s, lo, hi):  # pragma: no cover - compiled
        for i in range(x.shape[0]):
            t = (np.int64(x[i]) * ma + np.int64(y[i]) * mb + c) >> s
            out[i] = np.int8(min(max(t, lo), hi))

    @_jit
    def _lut16(x, tab, out):  # pragma: no cover - compiled
        for i in range(x.shape[0]):
            out[i] = tab[np.int64(x[i]) + 32768]

    # The parallel forms: `parts` contiguous blocks of the leading axis (rows, batch entries,
    # groups or flat elements), one per thread, each run by the serial kernel above on its slices.
    # Every output element is written by one block and depends on its own row only: the same bits
    # for any number of parts.
    _pjit = _compiler(nogil=True, boundscheck=False, error_model="numpy", parallel=True)

    @_pjit
    def _requant_i32_par(acc, out, a_lo, a_hi, mult, c, shift, parts):  # pragma: no cover - compiled
        n = acc.shape[0]
        for p in prange(parts):
            r0, r1 = n * p // parts, n * (p + 1) // parts
            _requant_i32(acc[r0:r1], out[r0:r1], a_lo, a_hi, mult, c, shift)

    @_pjit
    def _mm_small_par(a, b, b_transposed, out, za, zb, a_lo, a_hi, mult, c, shift, parts):  # pragma: no cover
        n = a.shape[0]
        for p in prange(parts):
            r0, r1 = n * p // parts, n * (p + 1) // parts
            if b_transposed:
                _mm_nt(a[r0:r1], b[r0:r1], out[r0:r1], za, zb, a_lo, a_hi, mult, c, shift)
            else:
                _mm_nn(a[r0:r1], b[r0:r1], out[r0:r1], za, zb, a_lo, a_hi, mult, c, shift)

    @_pjit
    def _layernorm_par(x, out, zp, rms, rd, eps_term, g, b, f53, a_lo, a_hi, m, c, lo8, floor_,
                       parts):  # pragma: no cover - compiled
        n = x.shape[0]
        for p in prange(parts):
            r0, r1 = n * p // parts, n * (p + 1) // parts
            _layernorm(x[r0:r1], out[r0:r1], zp, rms, rd, eps_term, g, b, f53, a_lo, a_hi, m, c, lo8, floor_)

    @_pjit
    def _softmax_par(x, out, tab, causal, off, parts):  # pragma: no cover - compiled
        groups, rows = x.shape[0], x.shape[1]
        if groups >= parts:
            for p in prange(parts):
                g0, g1 = groups * p // parts, groups * (p + 1) // parts
                _softmax(x[g0:g1], out[g0:g1], tab, causal, off)
        else:  # rows t0 .. t1 - 1 of every group: the causal offset moves by t0
            for p in prange(parts):
                t0, t1 = rows * p // parts, rows * (p + 1) // parts
                _softmax(x[:, t0:t1], out[:, t0:t1], tab, causal, off + t0)

    @_pjit
    def _lut16_par(x, tab, out, parts):  # pragma: no cover - compiled
        n = x.shape[0]
        for p in prange(parts):
            i0, i1 = n * p // parts, n * (p + 1) // parts
            _lut16(x[i0:i1], tab, out[i0:i1])

    @_pjit
    def _add_i32_par(x, y, out, ma, mb, c, s, lo, hi, parts):  # pragma: no cover - compiled
        n = x.shape[0]
        for p in prange(parts):
            i0, i1 = n * p // parts, n * (p + 1) // parts
            _add_i32(x[i0:i1], y[i0:i1], out[i0:i1], ma, mb, c, s, lo, hi)


def requant_i32(acc: np.ndarray, out: np.ndarray, a_lo, a_hi, mult, c, shift) -> None:
    """out[r, j] = ((clamp(acc[r, j], a_lo[j], a_hi[j]) * mult[j] + c[j]) >> shift[j]) as int8 for
    int32 acc [rows, n] (int32 vectors [n]): the pre-clamped int32 form (requant._int32_form,
    Requant.fold_bias), whose bounds (checked where the form is made) keep the product and the sum
    within int32 for every clamped A: int32 arithmetic, the exact integers, as the torch form."""
    _go(_requant_i32, _requant_i32_par, acc.shape[0], acc.size, acc, out, a_lo, a_hi, mult, c, shift)


def matmul_small(a: np.ndarray, b: np.ndarray, b_transposed: bool, out: np.ndarray, za: int, zb: int,
                 form: tuple) -> None:
    """out = requant(sum_k (a - za)(b - zb)) for int8 a [B, M, K] and b [B, K, N] given as b itself
    (C-contiguous) or, with `b_transposed`, as b^T [B, N, K] (C-contiguous: a K cache as it lies),
    out int8 [B, M, N]. The sum in int32: |each partial sum| <= 255 * 255 * K < 2^31 for K <= 2^15
    (the op's bound, 2.2), exact; `form` (a_lo, a_hi, mult, c, shift) the per-tensor pre-clamped int32
    requant (`requant_i32`'s). For a decode step's few query rows, where GEMM calls cost more than
    the products."""
    a_lo, a_hi, mult, c, shift = (np.int32(v) for v in form)
    _go(_mm_small, _mm_small_par, a.shape[0], a.size * (b.size // max(1, b.shape[0])) // 16, a, b, b_transposed,
        out, np.int32(za), np.int32(zb), a_lo, a_hi, mult, c, shift)


def _mm_small(a, b, b_transposed, *args) -> None:
    """The serial matmul_small: b^T as it lies, or b."""
    (_mm_nt if b_transposed else _mm_nn)(a, b, *args)


def layernorm(x: np.ndarray, out: np.ndarray, zp: int, rms: bool, rd: float, eps_term: int, g: np.ndarray,
              b: np.ndarray, form: tuple) -> None:
    """kernels._prep_layernorm's `block` on int8 x [rows, D] into out (uint8 view of the int8
    result). `form`: (True, a_lo, a_hi, m, c, lo mod 256, False) for the float64-integer requant
    (`Requant.f53_`), (False, a_lo, a_hi, m, c, 0, floor) for the pre-clamped fp64 form
    (`Requant.fp64_`)."""
    f53, a_lo, a_hi, m, c, lo8, floor_ = form
    _go(_layernorm, _layernorm_par, x.shape[0], 4 * x.size, x, out, zp, rms, rd, eps_term, g, b, f53, a_lo, a_hi,
        m, c, lo8, floor_)


def softmax(x: np.ndarray, out: np.ndarray, tab: np.ndarray, causal: bool, off: int) -> None:
    """kernels._prep_softmax's `chunk` over int8 x [G, R, L] into out (uint8 [G, R, L]: the bytes
    of y); tab: the clamped exp table, float64 [768]."""
    _go(_softmax, _softmax_par, max(x.shape[0], x.shape[1]), 4 * x.size, x, out, tab, causal, off)


def add_i32(x: np.ndarray, y: np.ndarray, out: np.ndarray, ma: int, mb: int, c: int, s: int, lo: int,
            hi: int) -> None:
    """clamp((x ma + y mb + C) >> s, lo, hi) over flat int8 x, y (kernels._add_int32's form)."""
    _go(_add_i32, _add_i32_par, x.shape[0], x.size, x, y, out, ma, mb, c, s, lo, hi)


def lut16(x: np.ndarray, tab: np.ndarray, out: np.ndarray) -> None:
    """out[i] = tab[x[i] + 2^15] over int16 words: kernels._lut_pairs's table of byte pairs, each
    word of x (two int8 elements) looked up at once (pure data movement: the same bytes)."""
    _go(_lut16, _lut16_par, x.shape[0], 2 * x.size, x, tab, out)


#: Work (about elements) below which a kernel runs on the calling thread only: a parallel region
#: costs a few microseconds to start, and a decode step's small ops take 5-50 us in all.
PARALLEL_MIN = 1 << 16


def threads() -> int:
    """The threads a kernel call may use: torch's intra-op setting (`torch.set_num_threads`, or
    OMP_NUM_THREADS; the benches' --threads), at most numba's pool size."""
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _go(serial, par, n: int, work: int, *args) -> None:
    """The serial kernel on the calling thread, or its parallel form over min(threads, n) blocks of
    the leading axis where there is enough work and more than one thread."""
    parts = min(threads(), n)
    if parts <= 1 or work < PARALLEL_MIN:
        serial(*args)
        return
    numba.set_num_threads(parts)
    par(*args, parts)
