"""The speed paths are exact: keccak256 equals pycryptodome's on random data and the
tree functions equal a naive rebuild from the spec; the float64 requant and add equal the int64
formula (docs/protocol.md 2.1) on accumulators built to land on and next to every rounding tie, at
every shift the float64 path accepts; the prepared executor equals per-op run_op."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from Crypto.Hash import keccak as pyc_keccak

from gpumesh.client.core import merkle
from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime import requant as rq
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, load_units

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"


def _pyc(b: bytes) -> bytes:
    return pyc_keccak.new(data=b, digest_bits=256).digest()


def test_keccak_equals_pycryptodome():
    """merkle.keccak256 (safe-pysha3) against a second implementation (pycryptodome), across the
    136-byte rate boundary and for every buffer type the code hands it."""
    rng = np.random.default_rng(1)
    for n in [0, 1, 31, 32, 33, 64, 65, 135, 136, 137, 1024, 1025, 4097, 100_000]:
        b = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert merkle.keccak256(b) == _pyc(b)
    assert merkle.keccak256(bytearray(b"abc")) == merkle.keccak256(memoryview(b"xabc")[1:]) == _pyc(b"abc")
    # published keccak256("") (Ethereum's empty-code hash)
    assert merkle.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def _naive_root(data: bytes) -> bytes:
    n = max(1, -(-len(data) // LEAF_BYTES))
    size = 1 << (n - 1).bit_length()
    padded = data + bytes(size * LEAF_BYTES - len(data))
    level = [_pyc(b"\x00" + padded[i : i + LEAF_BYTES]) for i in range(0, len(padded), LEAF_BYTES)]
    while len(level) > 1:
        level = [_pyc(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@pytest.mark.parametrize("nbytes", [0, 1, 1023, 1024, 1025, 3 * 1024, 5 * 1024 + 7, 17 * 1024])
def test_tensor_root_equals_naive_full_tree(nbytes):
    data = os.urandom(nbytes)
    assert merkle.tensor_root(data) == _naive_root(data)


def test_keccak_per_thread_states():
    from concurrent.futures import ThreadPoolExecutor

    blobs = [os.urandom(i * 37 % 3000) for i in range(200)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(merkle.keccak256, blobs))
    assert got == [_pyc(b) for b in blobs]


def _int64_requant(acc: np.ndarray, mult: int, shift: int, zp: int, lo: int, hi: int) -> np.ndarray:
    v = [min(max(((int(a) * mult + (1 << (shift - 1))) >> shift) + zp, lo), hi) for a in acc]
    return np.array(v, dtype=np.int8)


@pytest.mark.parametrize("shift", [1, 2, 13, 31, 32, 36, 40, 41, 42])
def test_fp64_requant_exact_at_ties(shift, cpu_kernels):
    rng = np.random.default_rng(shift)
    req_cases = 0
    for _ in range(30):
        mult = int(rng.integers(1, 2**31))
        zp, lo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        # accumulators whose exact value acc*mult/2^s is just below, at, and just above k + 1/2
        accs = []
        for k in rng.integers(-300, 300, 12):
            target = (2 * int(k) + 1) << (shift - 1)  # (k + 1/2) * 2^s
            a0 = target // mult
            accs += [a0 - 1, a0, a0 + 1, a0 + 2]
        accs += [-(2**31), 2**31 - 1, 0, 1, -1]
        acc = np.array([a for a in accs if -(2**31) <= a < 2**31], dtype=np.int32)
        req = rq.Requant(mult, shift, zp, lo, hi, torch.device("cpu"))
        assert req.fp64
        want = _int64_requant(acc, mult, shift, zp, lo, hi)
        assert np.array_equal(req(torch.from_numpy(acc).to(torch.float64)).numpy(), want)
        assert np.array_equal(req.int32(torch.from_numpy(acc)).numpy(), want)  # pre-clamped when m <= 1
        req_cases += 1
    assert req_cases == 30


@pytest.mark.parametrize("shift", [1, 2, 5, 13, 22, 23, 24, 30, 31, 36, 42])
def test_pre_clamp_requant_exact_at_its_bounds(shift, cpu_kernels):
    """The int32 pre-clamp (m = mult * 2^-shift <= 1): at, below and above each channel's clamp
    bounds, at the ties, at the int32 extremes, and on channels where every int32 A saturates; per
    tensor and per channel, against the int64 formula. Shifts up to 23 take the all-int32 form
    (_int32_form) whenever the pre-clamp applies; larger ones the float64 form."""
    rng = np.random.default_rng(1000 + shift)
    taken = taken_i32 = 0
    for _ in range(40):
        ch = int(rng.integers(1, 5))
        mult = [int(rng.integers(1, min(2**shift, 2**31 - 1) + 1)) >> int(rng.integers(0, 3)) or 1 for _ in range(ch)]
        zp, lo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        hi = int(rng.integers(lo, 128))
        accs = [-(2**31), -(2**31) + 1, 2**31 - 2, 2**31 - 1, 0, 1, -1]
        for mu in mult:
            b = rq.pre_clamp_bounds(mu, shift, zp, lo, hi)
            for a in b or ():
                accs += [a - 2, a - 1, a, a + 1, a + 2]
            for k in rng.integers(-200, 200, 4):
                a0 = ((2 * int(k) + 1) << (shift - 1)) // mu
                accs += [a0 - 1, a0, a0 + 1]
        acc = np.array([a for a in accs if -(2**31) <= a < 2**31], dtype=np.int32)
        grid = np.repeat(acc[:, None], ch, axis=1)  # [n, ch]: every A on every channel
        req = rq.Requant(np.array(mult), np.full(ch, shift), zp, lo, hi, torch.device("cpu"))
        taken += req.pre is not None
        taken_i32 += req.i32 is not None
        if shift <= 23:
            assert (req.i32 is not None) == (req.pre is not None)
        elif shift > 30:
            assert req.i32 is None
        got = req.int32(torch.from_numpy(grid)).numpy()
        for c in range(ch):
            assert np.array_equal(got[:, c], _int64_requant(acc, mult[c], shift, zp, lo, hi)), (mult[c], zp, lo, hi)
    assert taken >= 20  # most draws take the pre-clamp path
    if shift <= 23:
        assert taken_i32 == taken


def test_pre_clamp_bounds_degenerate_channel():
    # every int32 A gives k(A) <= 0 < lo: no bounds, the float clamp path is used
    assert rq.pre_clamp_bounds(1, 30, -2, 1, 1) is None
    req = rq.Requant(1, 30, -2, 1, 1, torch.device("cpu"))
    assert req.pre is None
    acc = torch.tensor([-(2**31), 11764997, 2**31 - 1], dtype=torch.int32)
    assert req.int32(acc).tolist() == [1, 1, 1]


def test_fp64_limit_falls_back_to_int64():
    assert not rq.Requant(12345, rq.FP64_MAX_SHIFT + 1, 0, -128, 127, torch.device("cpu")).fp64


@pytest.mark.parametrize("shift", [1, 20, 31, 42, 43, 62])
def test_add_fast_path_exact_at_ties(shift):
    rng = np.random.default_rng(100 + shift)
    t = TensorType(DType.INT8, (256, 256))
    slots = (SlotRef(SlotKind.UNIT_INPUT, 0, t), SlotRef(SlotKind.WEIGHT, 0, t))
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)  # every (a, b) pair
    b = a.T.copy()
    for _ in range(6):
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        lo = int(rng.integers(-128, 128))
        ma = int(rng.integers(0, 2**31)) >> int(rng.integers(0, 20))
        mb = int(rng.integers(0, 2**31)) >> int(rng.integers(0, 20))
        if shift <= 8:
            ma, mb = ma >> 24, mb >> 24
        d = OpDescriptor(Opcode.ADD, slots, t, make_attrs(Opcode.ADD, za=za, zb=zb, ma=ma, mb=mb, shift=shift, zy=zy,
                                                          lo=lo, hi=int(rng.integers(lo, 128))))
        got = kernels.run_op(d, [torch.from_numpy(a), torch.from_numpy(b)])
        want = kernels._run_generic(d, [torch.from_numpy(a), torch.from_numpy(b)])
        assert torch.equal(got, want)


@pytest.mark.parametrize("shift", [1, 4, 12, 20, 22, 23])
def test_add_int32_form_exact_on_every_input_pair(shift, cpu_kernels):
    """The all-int32 add (kernels._add_int32), export-like multipliers (m <= 2): every (a, b) int8
    pair, random zero points and bounds, against the int64 form; taken whenever its corner check
    passes, which it does for most draws at these shifts."""
    rng = np.random.default_rng(200 + shift)
    t = TensorType(DType.INT8, (256, 256))
    slots = (SlotRef(SlotKind.UNIT_INPUT, 0, t), SlotRef(SlotKind.WEIGHT, 0, t))
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    b = a.T.copy()
    taken = 0
    for _ in range(8):
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3)) if rng.integers(0, 2) else (0, 0, 0)
        lo = int(rng.integers(-128, 128))
        ma, mb = (int(rng.integers(0, 2 << shift)) for _ in range(2))
        attrs = make_attrs(Opcode.ADD, za=za, zb=zb, ma=ma, mb=mb, shift=shift, zy=zy, lo=lo,
                           hi=int(rng.integers(lo, 128)))
        d = OpDescriptor(Opcode.ADD, slots, t, attrs)
        taken += kernels._add_int32(dict(d.attrs)) is not None
        got = kernels.run_op(d, [torch.from_numpy(a), torch.from_numpy(b)])
        want = kernels._run_generic(d, [torch.from_numpy(a), torch.from_numpy(b)])
        assert torch.equal(got, want)
    assert taken >= 4


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_prepared_executor_equals_per_op_generic_kernels(name, cpu_kernels):
    bundle = load_program(EXAMPLES / name)
    prog = bundle.program
    units = load_units(EXAMPLES / "data" / f"test_inputs_{name}.safetensors", prog)
    tr = Executor(bundle).trace(units[2])
    outs: list[torch.Tensor] = []
    w = {x.name: torch.from_numpy(np.array(bundle.weight_arrays[x.name])) for x in prog.weights}
    for j, op in enumerate(prog.ops):
        xs = [w[prog.weights[s.index].name] if s.kind == SlotKind.WEIGHT else
              torch.from_numpy(np.array(units[2])) if s.kind == SlotKind.UNIT_INPUT else outs[s.index]
              for s in op.desc.inputs]
        outs.append(kernels._run_generic(op.desc, xs))
        assert np.ascontiguousarray(outs[-1].numpy()).tobytes() == tr.outputs[j], op.name


@pytest.mark.parametrize("seed", range(6))
def test_linear_with_folded_bias_equals_the_int64_form(seed, cpu_kernels):
    """The bias folded into the int32 requant (Requant.fold_bias): export-like multipliers (shift
    <= 23, m <= 1), biases from 0 to near the no-wrap limit, inputs at the int8 extremes (so A
    reaches +-128 * sum|W|) and at random; the prepared linear equals the generic int64 form, and
    the fold is taken for most draws and refused where the constant would leave int32."""
    from gpumesh.client.core.ops.types import Opcode as Op
    from gpumesh.client.core.ops.types import ReqMode, Requant
    from gpumesh.node.runtime.randprog import _case

    rng = np.random.default_rng(seed)
    taken = refused = 0
    for _ in range(25):
        k, n = int(rng.integers(1, 200)), int(rng.integers(1, 20))
        w = rng.integers(-127, 128, (n, k)).astype(np.int8)
        scale = [0, 10, 10**4, 10**6, 2**31 - 1 - 128 * int(np.abs(w.astype(np.int64)).sum(axis=1).max())][
            int(rng.integers(0, 5))]
        b = rng.integers(-scale, scale + 1, n).astype(np.int32)
        shift = int(rng.integers(1, 24))
        qp = np.array([[int(rng.integers(1, (1 << shift) + 1)), shift] for _ in range(n)], dtype=np.int32)
        lo = int(rng.integers(-128, 128))
        x = np.concatenate([rng.integers(-128, 128, (40, k)), np.where(w[:1] > 0, 127, -128).repeat(2, 0),
                            np.where(w[:1] > 0, -128, 127).repeat(2, 0)]).astype(np.int8)
        req = Requant(ReqMode.PER_CHANNEL, 0, 0, int(rng.integers(-128, 128)), lo, int(rng.integers(lo, 128)))
        case = _case(Op.LINEAR, [TensorType(DType.INT8, x.shape), TensorType(DType.INT8, w.shape),
                                 TensorType(DType.INT32, b.shape), TensorType(DType.INT32, qp.shape)],
                     [x, w, b, qp], x_zp=int(rng.integers(-128, 128)) if rng.integers(0, 2) else 0, requant=req)
        d = case.desc
        fast = kernels.prepare_op(d, [w, b, qp], torch.device("cpu"))
        got = fast([torch.from_numpy(x)]).numpy()
        want = kernels.run_op(d, [torch.from_numpy(a) for a in case.inputs]).numpy()
        assert np.array_equal(got, want)
        r = rq.requant_of(d, qp, torch.device("cpu"))
        w64 = w.astype(np.int64)
        b_eff = b.astype(np.int64) - d.attr("x_zp") * w64.sum(axis=1)
        b_eff = (b_eff + 2**31) % 2**32 - 2**31
        reach = 128 * np.abs(w64).sum(axis=1)
        if (reach + np.abs(b_eff) <= 2**31 - 1).all() and r.fold_bias(b_eff, reach) is not None:
            taken += 1
        else:
            refused += 1
    assert taken >= 8 and refused >= 1


@pytest.mark.parametrize("c", [1, 2, 3, 16, 31, 32, 40])
@pytest.mark.parametrize("win", [(3, 3, 1, 1, 1, 1), (2, 3, 2, 1, 0, 1), (1, 1, 1, 1, 0, 0), (3, 2, 2, 3, 2, 1)])
def test_im2col_forms_equal_the_generic_gather(c, win):
    """Each prepared im2col form (take for C = 1, two concatenations for C < 32, the strided view
    from 32) equals the generic kernel, with strides, asymmetric windows and padding values."""
    kh, kw, sh, sw, ph, pw = win
    rng = np.random.default_rng(c * 100 + kh * 10 + sw)
    x = rng.integers(-128, 128, (3, 7, 6, c)).astype(np.int8)
    t = TensorType(DType.INT8, x.shape)
    attrs = make_attrs(Opcode.IM2COL, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, pad=int(rng.integers(-128, 128)))
    from gpumesh.client.core.ops.rules import expected_out

    slots = (SlotRef(SlotKind.UNIT_INPUT, 0, t),)
    d = OpDescriptor(Opcode.IM2COL, slots, expected_out(OpDescriptor(Opcode.IM2COL, slots, t, attrs)), attrs)
    got = kernels.prepare_op(d, [], torch.device("cpu"))([torch.from_numpy(x)])
    want = kernels._run_generic(d, [torch.from_numpy(x)])
    assert got.shape == want.shape and torch.equal(got, want)
