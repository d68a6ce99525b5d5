"""The export lowers reductions above the one-step bounds into the chunked ops (docs/protocol.md
5.7.7) and the result is the unchunked op's, bit for bit: an argmax over 131,072 int32 logits
(first index on ties), a global avgpool over 128x128x256 (the avgpool's own rounding), an argmax of
rank 4, and a row long enough to need a second level of chunkmax. Programs within the bounds keep
their ops and roots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gpumesh.client.core.ops.intmath import requant
from gpumesh.client.core.ops.rules import MAX_STEP_ELEMENTS, MAX_STEP_LEAVES, step_reads
from gpumesh.client.core.ops.types import Opcode
from gpumesh.client.core.program import Program
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.export import chunk_reductions, export_model
from gpumesh.node.runtime.files import load_program, save_program

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"


def _opcodes(p: Program) -> list[Opcode]:
    return [o.desc.opcode for o in p.ops]


def _within_bounds(p: Program) -> None:
    for o in p.ops:
        leaves, scanned = step_reads(o.desc)
        assert leaves <= MAX_STEP_LEAVES and scanned <= MAX_STEP_ELEMENTS, o.name


def _trace(tmp_path, prog, arrays, unit):
    save_program(tmp_path, prog, arrays)
    return Executor(load_program(tmp_path)).trace(unit).outputs


class GlobalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.flatten(self.pool(x), 1)


def test_argmax_over_131072_classes_is_chunked_and_exact(tmp_path):
    torch.manual_seed(5)
    prog, arrays = export_model(nn.Sequential(nn.Linear(16, 131072)), torch.randn(16, 16), 3)
    assert _opcodes(prog) == [Opcode.LINEAR, Opcode.CHUNKMAX, Opcode.PAIRARGMAX]
    assert prog.ops[1].desc.attr("q") == 16384 and prog.ops[1].desc.out.shape == (3, 8, 2)
    _within_bounds(prog)
    unit = np.random.default_rng(1).integers(-128, 128, (3, 16)).astype(np.int8)
    unit[2] = 0  # every logit equals the bias: ties decided by the bias alone
    outs = _trace(tmp_path, prog, arrays, unit)
    logits = np.frombuffer(outs[0], dtype="<i4").reshape(3, 131072).copy()
    got = np.frombuffer(outs[-1], dtype="<i4")
    assert list(got) == list(np.argmax(logits, axis=1))  # numpy's argmax: first index on ties
    # a tie across chunks: the first chunk's index wins
    logits[:] = 7
    logits[0, [5, 20000, 131071]] = 9
    q = np.ascontiguousarray(logits)
    from gpumesh.node.runtime import kernels

    cm = kernels.run_op(prog.ops[1].desc, [torch.from_numpy(q)])
    assert list(kernels.run_op(prog.ops[2].desc, [cm]).numpy()) == [5, 0, 0]


def test_global_avgpool_128x128x256_is_chunked_and_rounds_like_avgpool(tmp_path):
    prog, arrays = export_model(GlobalPool(), torch.randn(2, 256, 128, 128), 1, argmax=False)
    assert _opcodes(prog) == [Opcode.TRANSPOSE, Opcode.CHUNKSUM, Opcode.SUMREQUANT]
    _within_bounds(prog)
    pool = prog.ops[2].desc.requant
    unit = np.random.default_rng(2).integers(-128, 128, (1, 256, 128, 128)).astype(np.int8)
    outs = _trace(tmp_path, prog, arrays, unit)
    sums = unit.astype(np.int64).sum(axis=(2, 3))[0]  # avgpool's acc with x_zp = 0
    want = [requant(int(a), pool.mult, pool.shift, pool.zp, pool.lo, pool.hi) for a in sums]
    assert list(np.frombuffer(outs[-1], dtype=np.int8)) == want


def _raw(shape, ops):
    return {"format": "gpumesh.program", "version": 1, "input": {"name": "x", "dtype": "int8", "shape": shape},
            "weights": [], "ops": ops}


def test_rank4_argmax_is_reshaped_around_the_chunks(tmp_path):
    obj = chunk_reductions(_raw([2, 1, 3, 20000], [{"name": "am", "op": "argmax", "inputs": ["x"]}]))
    prog = Program.from_json(obj)
    assert _opcodes(prog) == [Opcode.RESHAPE, Opcode.CHUNKMAX, Opcode.PAIRARGMAX, Opcode.RESHAPE]
    assert prog.output_type.shape == (2, 1, 3)
    unit = np.random.default_rng(3).integers(-128, 128, (2, 1, 3, 20000)).astype(np.int8)
    unit[1, 0, 2] = 127
    outs = _trace(tmp_path, prog, {}, unit)
    assert list(np.frombuffer(outs[-1], dtype="<i4")) == list(np.argmax(unit, axis=-1).ravel())


def test_a_row_too_long_for_one_level_gets_a_second_chunkmax():
    # 150M int8 classes: 9,156 chunks of 16,384, above pairargmax's 8,192 pairs -> chunkmax of pairs
    prog = Program.from_json(chunk_reductions(_raw([1, 150_000_000], [{"name": "am", "op": "argmax",
                                                                        "inputs": ["x"]}])))
    assert _opcodes(prog) == [Opcode.CHUNKMAX, Opcode.CHUNKMAX, Opcode.PAIRARGMAX]
    assert [o.desc.out.shape for o in prog.ops] == [(1, 9156, 2), (1, 2, 2), (1,)]
    assert prog.ops[1].desc.attr("pairs") == 1
    _within_bounds(prog)


def test_programs_within_the_bounds_are_unchanged():
    for name in ("mlp", "cnn"):
        obj = json.loads((EXAMPLES / name / "program.json").read_text())
        assert chunk_reductions(obj) == obj
    small = _raw([1, 16384], [{"name": "am", "op": "argmax", "inputs": ["x"]}])
    assert chunk_reductions(small) == small
