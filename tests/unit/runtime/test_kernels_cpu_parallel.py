"""The fused CPU kernels' parallel forms (gpumesh.node.runtime.kernels_cpu: blocks of the leading
axis, one per thread) give the serial kernel's bytes for every number of threads, including splits
that do not divide the axis and the causal softmax split by rows (its offset moves with the block)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumesh.node.runtime import kernels_cpu

pytestmark = pytest.mark.skipif(kernels_cpu.numba is None, reason="numba not installed")


@pytest.fixture
def threads():
    """Runs the given call at 1, 2, 3 and 5 torch threads with every call big enough to split;
    returns the outputs."""
    before, floor = torch.get_num_threads(), kernels_cpu.PARALLEL_MIN

    def run(call):
        outs = []
        try:
            kernels_cpu.PARALLEL_MIN = 1
            for t in (1, 2, 3, 5):
                torch.set_num_threads(t)
                outs.append(call())
        finally:
            torch.set_num_threads(before)
            kernels_cpu.PARALLEL_MIN = floor
        return outs
    return run


def _same(outs):
    assert all(o.tobytes() == outs[0].tobytes() for o in outs[1:])


def test_split_is_taken_and_threads_follow_torch(monkeypatch):
    """With 2 torch threads and enough work the parallel form runs, split in 2; with 1 thread or
    a small call, the serial kernel."""
    calls = []
    par = kernels_cpu._add_i32_par  # (the serial kernel stays: the compiled parallel form calls it)
    monkeypatch.setattr(kernels_cpu, "_add_i32_par", lambda *a: (calls.append(a[-1]), par(*a)))
    big, small = kernels_cpu.PARALLEL_MIN, 100
    before = torch.get_num_threads()
    try:
        for t, n in ((2, big), (1, big), (2, small)):
            torch.set_num_threads(t)
            x = np.ones(n, np.int8)
            out = np.empty(n, np.int8)
            kernels_cpu.add_i32(x, x, out, 1, 1, 0, 0, -128, 127)
            assert (out == 2).all()
    finally:
        torch.set_num_threads(before)
    assert calls == [2]  # the parallel form once, in 2 parts; the other two calls serial


def test_requant_and_add_any_split(threads):
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**20, 2**20, (37, 19), dtype=np.int32)
    vec = [np.full(19, v, np.int32) for v in (-2**19, 2**19, 3001, 1 << 21, 22)]

    def requant():
        out = np.empty(acc.shape, np.int8)
        kernels_cpu.requant_i32(acc, out, *vec)
        return out
    _same(threads(requant))
    x, y = (rng.integers(-128, 128, 1001, dtype=np.int8) for _ in range(2))

    def add():
        out = np.empty(1001, np.int8)
        kernels_cpu.add_i32(x, y, out, 4693, 6608, 1 << 12, 13, -100, 90)
        return out
    _same(threads(add))


@pytest.mark.parametrize("groups,rows,length,off", [(7, 13, 13, 0), (1, 11, 40, 3), (2, 9, 9, 0), (3, 1, 50, 49)])
def test_softmax_any_split(threads, groups, rows, length, off):
    """(1, 11, 40, 3) and (2, 9, 9, 0): fewer groups than threads, so the rows are split and
    each block's causal offset is off + its first row."""
    rng = np.random.default_rng(groups * rows)
    x = rng.integers(-128, 128, (groups, rows, length), dtype=np.int8)
    tab = np.zeros(768)
    tab[:256] = np.clip(np.round(32768 * np.exp(-np.arange(256) / 24.0)), 0, 32768)
    for causal in (True, False):
        def run(causal=causal):
            out = np.empty(x.shape, np.uint8)
            kernels_cpu.softmax(x, out, tab, causal, off)
            return out
        outs = threads(run)
        _same(outs)
        if causal:  # masked: -128 (byte 128)
            t, j = np.meshgrid(np.arange(rows), np.arange(length), indexing="ij")
            assert (outs[-1][:, j > t + off] == 128).all()


def test_layernorm_and_matmul_any_split(threads):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (23, 64), dtype=np.int8)
    g, b = rng.integers(-128, 128, 64).astype(np.float64), rng.integers(-9000, 9000, 64).astype(np.float64)

    def ln():
        out = np.empty(x.shape, np.uint8)
        kernels_cpu.layernorm(x, out, 3, False, float(int(np.sqrt(64 << 24))), 64**3, g, b,
                              (False, -128 * 4096.0, 127 * 4096.0, 2.0**-12, 0.5, 0, True))
        return out
    _same(threads(ln))
    a = rng.integers(-128, 128, (11, 2, 40), dtype=np.int8)
    bt = rng.integers(-128, 128, (11, 17, 40), dtype=np.int8)
    form = (-2**20, 2**20, 700, 1 << 15, 16)
    for transposed, bb in ((True, bt), (False, np.ascontiguousarray(np.swapaxes(bt, 1, 2)))):
        def mm(transposed=transposed, bb=bb):
            out = np.empty((11, 2, 17), np.int8)
            kernels_cpu.matmul_small(a, bb, transposed, out, -3, 5, form)
            return out
        outs = threads(mm)
        _same(outs)
        want = np.einsum("imk,ink->imn", a.astype(np.int64) + 3, bt.astype(np.int64) - 5)
        want = (np.clip(want, -2**20, 2**20) * 700 + (1 << 15)) >> 16
        assert outs[0].tobytes() == want.astype(np.int8).tobytes()


def test_lut_any_split(threads):
    rng = np.random.default_rng(7)
    x = rng.integers(-2**15, 2**15, 1001).astype(np.int16)
    tab = rng.integers(-2**15, 2**15, 65536).astype(np.int16)

    def lut():
        out = np.empty(1001, np.int16)
        kernels_cpu.lut16(x, tab, out)
        return out
    outs = threads(lut)
    _same(outs)
    assert (outs[0] == tab[x.astype(np.int64) + 2**15]).all()
