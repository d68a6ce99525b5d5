"""Quantize float inputs for a program, cut them into units, and measure int8 accuracy against
labels (export reports float vs int8 accuracy with it). Adapter code (numpy + the executor)."""

from __future__ import annotations

import numpy as np

from gpumesh.client.core.ops.types import Opcode, ProgramError
from gpumesh.client.core.program import Program
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import ProgramBundle
from gpumesh.node.runtime.quant import quantize_act


def quantize_units(prog: Program, x: np.ndarray) -> np.ndarray:
    """Float samples [S, ...] -> int8 units [U, B, ...] (the last unit zero-padded to B samples).
    A token program (meta input_kind "tokens") takes integer ids in [0, 256): the unit holds id - 128."""
    if prog.meta.get("input_kind") == "tokens":
        return _token_units(prog, x)
    scale = prog.meta.get("input_scale")
    if not scale:
        raise ProgramError("program meta has no input_scale: cannot quantize float inputs")
    shape = prog.input.type.shape
    bsz = shape[0]
    if tuple(x.shape[1:]) != shape[1:]:
        raise ProgramError(f"samples are {list(x.shape[1:])}, the program takes {list(shape[1:])}")
    q = quantize_act(np.asarray(x, dtype=np.float64), float(scale))
    units = -(-len(q) // bsz)
    pad = np.zeros((units * bsz - len(q), *shape[1:]), dtype=np.int8)
    return np.concatenate([q, pad]).reshape(units, *shape)


def _token_units(prog: Program, x: np.ndarray) -> np.ndarray:
    shape = prog.input.type.shape
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ProgramError(f"a token program takes integer ids, got {x.dtype} samples")
    if tuple(x.shape[1:]) != shape[1:]:
        raise ProgramError(f"samples are {list(x.shape[1:])}, the program takes {list(shape[1:])}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ProgramError(f"token ids in [{x.min()}, {x.max()}]: the program takes ids in [0, 256)")
    q = (x.astype(np.int64) - int(prog.meta.get("token_offset", 128))).astype(np.int8)
    units = -(-len(q) // shape[0])
    pad = np.full((units * shape[0] - len(q), *shape[1:]), -128, dtype=np.int8)
    return np.concatenate([q, pad]).reshape(units, *shape)


def class_predictions(prog: Program, outputs: np.ndarray) -> np.ndarray:
    """One class per sample from a program's outputs [U, ...]: the values of a program ending in
    argmax (or its chunked form pairargmax), else the argmax of the last axis."""
    if prog.ops[-1].desc.opcode in (Opcode.ARGMAX, Opcode.PAIRARGMAX) or outputs.ndim <= 2:
        return outputs.reshape(-1)
    return outputs.argmax(axis=-1).reshape(-1)


def int8_predictions(bundle: ProgramBundle, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    res = Executor(bundle, device).run(quantize_units(bundle.program, x))
    return res.outputs.reshape(-1)[: len(x)]
