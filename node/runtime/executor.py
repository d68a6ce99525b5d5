"""The fast exact executor (torch) for workers and watchtowers.

    bundle = load_program("examples/digits/mlp")           # program.json + weights.safetensors
    ex = Executor(bundle, device="cpu")                      # or "cuda"
    res = ex.run(load_units("inputs.safetensors", bundle.program))
    res.result_root, res.unit_roots, res.outputs             # honest path: hashes outputs only
    tr = ex.trace(units[u])                                  # dispute: every op output + its root
    proof = element_proof(bundle, tr, op_index, element)     # (gpumesh.node.runtime.trace)

Adapter code (torch); it never imports the chain or IPFS adapters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gpumesh.client.core import merkle
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.client.core.program import result_root
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.files import NP_DTYPE, ProgramBundle


@dataclass(frozen=True)
class RunResult:
    outputs: np.ndarray  # [numUnits, *output.shape]
    unit_roots: tuple[bytes, ...]
    result_root: bytes
    exec_seconds: float
    hash_seconds: float


@dataclass(frozen=True)
class Trace:
    """Every op output of one unit (canonical bytes), their tensor trees, and the trace root."""

    unit_input: bytes
    outputs: tuple[bytes, ...]
    levels: tuple[list[list[bytes]], ...]
    trace_root: bytes

    @property
    def roots(self) -> tuple[bytes, ...]:
        return tuple(lv[-1][0] for lv in self.levels)

    @property
    def output_root(self) -> bytes:
        return self.roots[-1]


class Executor:
    def __init__(self, bundle: ProgramBundle, device: str = "cpu") -> None:
        kernels.set_deterministic()
        self.bundle = bundle
        self.program = bundle.program
        self.device = torch.device(device)
        self._weights = [
            torch.from_numpy(np.array(bundle.weight_arrays[w.name], copy=True)).to(self.device)
            for w in self.program.weights
        ]
        self._descs = [op.desc for op in self.program.ops]
        # last op reading each op output: the honest path drops a tensor after its last reader
        self._last_use = {}
        for j, d in enumerate(self._descs):
            for s in d.inputs:
                if s.kind == SlotKind.OP_OUTPUT:
                    self._last_use[s.index] = j

    def _forward(self, unit: torch.Tensor, keep: bool) -> list[torch.Tensor | None]:
        outs: list[torch.Tensor | None] = []
        for j, d in enumerate(self._descs):
            xs = []
            for s in d.inputs:
                if s.kind == SlotKind.WEIGHT:
                    xs.append(self._weights[s.index])
                elif s.kind == SlotKind.UNIT_INPUT:
                    xs.append(unit)
                else:
                    xs.append(outs[s.index])
            outs.append(kernels.run_op(d, xs))
            if not keep:
                for s in d.inputs:
                    if s.kind == SlotKind.OP_OUTPUT and self._last_use[s.index] == j:
                        outs[s.index] = None
        return outs

    def _to_device(self, unit: np.ndarray) -> torch.Tensor:
        t = self.program.input.type
        a = np.ascontiguousarray(unit, dtype=NP_DTYPE[t.dtype]).reshape(t.shape)
        return torch.from_numpy(a).to(self.device)

    @torch.inference_mode()
    def run_unit(self, unit: np.ndarray) -> np.ndarray:
        """Output tensor of one unit (as the program's output dtype and shape)."""
        return self._forward(self._to_device(unit), keep=False)[-1].cpu().numpy()

    @torch.inference_mode()
    def run(self, units: np.ndarray) -> RunResult:
        """Every unit of an inputs tensor [U, *input.shape]: outputs, per-unit roots, result root."""
        t0 = time.perf_counter()
        outs = [self._forward(self._to_device(u), keep=False)[-1] for u in units]
        host = [o.cpu().numpy() for o in outs]
        t1 = time.perf_counter()
        roots = tuple(merkle.tensor_root(np.ascontiguousarray(o).tobytes()) for o in host)
        rr = result_root(list(roots))
        t2 = time.perf_counter()
        return RunResult(np.stack(host), roots, rr, t1 - t0, t2 - t1)

    @torch.inference_mode()
    def trace(self, unit: np.ndarray) -> Trace:
        """Re-run one unit keeping every op output: their roots, trees and the trace root."""
        x = self._to_device(unit)
        outs = [np.ascontiguousarray(o.cpu().numpy()).tobytes() for o in self._forward(x, keep=True)]
        levels = tuple(merkle.tensor_levels(b) for b in outs)
        root = merkle.roots_root([lv[-1][0] for lv in levels])
        return Trace(np.ascontiguousarray(x.cpu().numpy()).tobytes(), tuple(outs), levels, root)
