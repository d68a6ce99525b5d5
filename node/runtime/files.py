"""Program folders and inputs/outputs files (docs/protocol.md 3.1), read and written with
safetensors only (a job is data: never pickle, never torch.load).

Adapter code (numpy, safetensors); used by the executor, the CLI and the export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from gpumesh.client.core.errors import GpumeshError
from gpumesh.client.core.ops.types import DType, ProgramError, TensorType
from gpumesh.client.core.program import Program, check_weight_values

PROGRAM_FILE = "program.json"
WEIGHTS_FILE = "weights.safetensors"
UNITS_KEY = "units"
OUTPUTS_KEY = "outputs"

NP_DTYPE = {DType.INT8: np.dtype("<i1"), DType.INT32: np.dtype("<i4")}


class RuntimeFault(GpumeshError):
    """The runtime cannot do what was asked (missing file, unreadable tensor file...)."""


def canonical_bytes(a: np.ndarray, t: TensorType) -> bytes:
    """Row-major little-endian encoding, after checking dtype and shape against the program."""
    if a.dtype != NP_DTYPE[t.dtype] or tuple(a.shape) != t.shape:
        raise ProgramError(f"tensor is {a.dtype}{list(a.shape)}, the program says {t}")
    return np.ascontiguousarray(a).tobytes()


def from_bytes(b: bytes, t: TensorType) -> np.ndarray:
    return np.frombuffer(b, dtype=NP_DTYPE[t.dtype]).reshape(t.shape)


@dataclass(frozen=True)
class ProgramBundle:
    """A validated program with its weights as canonical bytes and as arrays (declaration order)."""

    program: Program
    weight_bytes: dict[str, bytes]
    weight_arrays: dict[str, np.ndarray]


def read_tensors(path: str | Path, as_torch: bool = False) -> dict:
    """A safetensors file as {name: numpy array} (or torch tensor), or one clear error: a missing
    file (RuntimeFault), an unreadable one (ProgramError). Never pickle."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeFault(f"{path}: no such file")
    try:
        if as_torch:
            from safetensors.torch import load_file as load_torch

            return load_torch(str(path))
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types; the file is untrusted
        raise ProgramError(f"{path}: not a readable safetensors file ({exc})") from None


def load_program(folder: str | Path) -> ProgramBundle:
    folder = Path(folder)
    pj = folder / PROGRAM_FILE
    if not pj.is_file():
        raise RuntimeFault(f"{folder}: no {PROGRAM_FILE}")
    try:
        obj = json.loads(pj.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{pj}: not JSON ({exc})") from None
    prog = Program.from_json(obj)
    arrays = read_tensors(folder / WEIGHTS_FILE) if prog.weights else {}
    extra = set(arrays) - {w.name for w in prog.weights}
    if extra:
        raise ProgramError(f"weights file holds undeclared tensors {sorted(extra)}")
    wb = {}
    for w in prog.weights:
        if w.name not in arrays:
            raise ProgramError(f"weight {w.name!r} missing from the weights file")
        wb[w.name] = canonical_bytes(arrays[w.name], w.type)
    check_weight_values(prog, wb)
    return ProgramBundle(prog, wb, {w.name: arrays[w.name] for w in prog.weights})


def save_program(folder: str | Path, prog: Program, weights: dict[str, np.ndarray]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROGRAM_FILE).write_text(json.dumps(prog.to_json(), indent=2, sort_keys=True) + "\n")
    save_file({w.name: np.ascontiguousarray(weights[w.name]) for w in prog.weights}, str(folder / WEIGHTS_FILE))


def load_units(path: str | Path, prog: Program) -> np.ndarray:
    """The `units` tensor [numUnits, *input.shape] int8 of an inputs file."""
    t = read_tensors(Path(path))
    if set(t) != {UNITS_KEY}:
        raise ProgramError(f"an inputs file holds exactly one tensor named {UNITS_KEY!r}, got {sorted(t)}")
    a = t[UNITS_KEY]
    want = (prog.input.type.shape)
    if a.dtype != np.int8 or a.ndim != len(want) + 1 or tuple(a.shape[1:]) != want or a.shape[0] < 1:
        raise ProgramError(f"units tensor is {a.dtype}{list(a.shape)}, expected int8[U, {', '.join(map(str, want))}]")
    return a


def save_units(path: str | Path, units: np.ndarray) -> None:
    save_file({UNITS_KEY: np.ascontiguousarray(units.astype(np.int8))}, str(path))


def save_outputs(path: str | Path, outputs: np.ndarray) -> None:
    save_file({OUTPUTS_KEY: np.ascontiguousarray(outputs)}, str(path))


def load_outputs(path: str | Path) -> np.ndarray:
    t = read_tensors(Path(path))
    if set(t) != {OUTPUTS_KEY}:
        raise ProgramError(f"an outputs file holds exactly one tensor named {OUTPUTS_KEY!r}")
    return t[OUTPUTS_KEY]
