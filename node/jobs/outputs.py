"""A job's outputs file (docs/protocol.md 3.1: one safetensors tensor `outputs`
[numUnits, *output.shape] of the last op's dtype) as bytes, and its verification against a result
root: the per-unit output roots and the result root are recomputed from the bytes, so outputs that
any IPFS node or worker serves are accepted only if they are the ones committed on-chain.

Used by the worker (publish), the poster (`gpumesh job result`) and the watchtower. safetensors
only: never pickle.
"""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from gpumesh.client.core import merkle
from gpumesh.client.core.program import Program, result_root
from gpumesh.node.jobs.fetch import JobDataError
from gpumesh.node.runtime.files import NP_DTYPE, OUTPUTS_KEY


def outputs_bytes(outputs: np.ndarray) -> bytes:
    """The outputs file for `outputs` [numUnits, *output.shape] (deterministic bytes)."""
    return st_save({OUTPUTS_KEY: np.ascontiguousarray(outputs)})


def unit_output_roots(outputs: np.ndarray) -> tuple[bytes, ...]:
    return tuple(merkle.tensor_roots(np.ascontiguousarray(outputs))) if len(outputs) else ()


def parse_outputs(data: bytes, program: Program, num_units: int | None = None) -> np.ndarray:
    """The `outputs` tensor of an outputs file, checked for name, dtype and shape."""
    try:
        t = st_load(bytes(data))
    except Exception as exc:  # safetensors' own error types; the bytes are untrusted
        raise JobDataError(f"outputs file is not a readable safetensors file ({exc})") from None
    if set(t) != {OUTPUTS_KEY}:
        raise JobDataError(f"an outputs file holds exactly one tensor named {OUTPUTS_KEY!r}, got {sorted(t)}")
    a = t[OUTPUTS_KEY]
    out = program.output_type
    want_dtype = NP_DTYPE[out.dtype]
    if a.dtype != want_dtype or a.ndim != len(out.shape) + 1 or tuple(a.shape[1:]) != out.shape:
        raise JobDataError(f"outputs tensor is {a.dtype}{list(a.shape)}, the program gives "
                           f"{want_dtype}[U, {', '.join(map(str, out.shape))}]")
    if num_units is not None and a.shape[0] != num_units:
        raise JobDataError(f"outputs hold {a.shape[0]} units, the job has {num_units}")
    return a


def verify_outputs(data: bytes, program: Program, result_root_: bytes, num_units: int | None = None) -> np.ndarray:
    """The outputs tensor of `data` if its unit output roots hash to `result_root_`; else JobDataError."""
    a = parse_outputs(data, program, num_units)
    got = result_root(list(unit_output_roots(a)))
    if got != bytes(result_root_):
        raise JobDataError(f"outputs hash to result root 0x{got.hex()}, the chain says 0x{bytes(result_root_).hex()}")
    return a
