"""The fast exact executor (torch) for workers and watchtowers.

    bundle = load_program("examples/digits/mlp")           # program.json + weights.safetensors
    ex = Executor(bundle, device="cpu")                      # or "cuda"
    res = ex.run(load_units("inputs.safetensors", bundle.program))
    res.result_root, res.unit_roots, res.outputs             # honest path: hashes outputs only
    outs = ex.run_units(units[a:b])                          # outputs only (units stacked, 2.5)
    tr = ex.trace(units[u])                                  # dispute: every op output + its root
    roots = ex.trace_roots(units[u])                         # dispute, streaming: op output roots only
    outs = ex.op_outputs(units[u], [j])                      # ... and op j's output recomputed on demand
    proof = element_proof(bundle, tr, op_index, element)     # (gpumesh.node.runtime.trace)

Adapter code (torch); it never imports the chain or IPFS adapters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from gpumesh.client.core import merkle
from gpumesh.client.core.ops.types import SlotKind
from gpumesh.client.core.program import result_root
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.files import NP_DTYPE, ProgramBundle
from gpumesh.node.runtime.stacking import STACK_BYTES, STACK_BYTES_CUDA, pass_rows, stack_blocker

_UNIT = object()  # plan marker: the unit input tensor


def _flat_bytes(y: torch.Tensor) -> memoryview:
    """A tensor's canonical bytes (row-major, little-endian) as a flat byte view: no copy of a
    contiguous CPU tensor."""
    return memoryview(np.ascontiguousarray(y.cpu().numpy()).reshape(-1).view(np.uint8))


class _Weights:
    """The program's weights as device tensors, made on first use: most weights (linear W, tables)
    are read only as prepared constants (kernels.prepare_op), so a tensor copy of every weight
    would add the whole weights file to the executor's memory for nothing (125 MB at the
    GPT-2-small shape)."""

    def __init__(self, bundle: ProgramBundle, device: torch.device) -> None:
        self._bundle, self._device = bundle, device
        self._made: dict[int, torch.Tensor] = {}

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self._made:
            a = self._bundle.weight_arrays[self._bundle.program.weights[i].name]
            self._made[i] = torch.from_numpy(np.array(a, copy=True)).to(self._device)
        return self._made[i]


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
    #: Input rows per forward pass of run_units (`stacking.pass_rows` unless `stack` units are
    #: given), and the whole units that makes (at least 1).
    rows: int
    stack: int

    def __init__(self, bundle: ProgramBundle, device: str = "cpu", stack: int | None = None) -> None:
        kernels.set_deterministic()
        self.bundle = bundle
        self.program = bundle.program
        self.device = torch.device(device)
        if self.device.type == "cpu":
            kernels.tune_allocator()
        self._weights = _Weights(bundle, self.device)
        self._descs = [op.desc for op in self.program.ops]
        self._plan = [self._prepare(d) for d in self._descs]
        # the ops reading each op output, in order; the honest path drops an output right after
        # its last reader
        self._readers: dict[int, list[int]] = {}
        for j, d in enumerate(self._descs):
            for s in d.inputs:
                if s.kind == SlotKind.OP_OUTPUT:
                    self._readers.setdefault(s.index, []).append(j)
        self._frees = [tuple(i for i, rd in self._readers.items() if rd[-1] == j) for j in range(len(self._descs))]
        b = self.program.input.type.shape[0]
        budget = STACK_BYTES_CUDA if self.device.type == "cuda" else STACK_BYTES
        if stack is None or stack_blocker(self.program) is not None:  # a blocked program: one unit per pass
            self.rows = pass_rows(self.program, budget)
        else:
            self.rows = max(1, stack) * b
        self.stack = max(1, self.rows // b)
        self._honest, self.pooled = self._pooled_plan()
        self._graphs: dict | None = {}  # CUDA: pass shape -> (graph, static input, static output)

    def _pooled_plan(self) -> tuple[list, tuple[int, ...]]:
        """The honest path's plan: each linear + requant whose only reader is a poolable maxpool
        passes its input on to that maxpool's entry, which runs the GEMM, pools the int32
        accumulators and requantizes after the pool (kernels.prepare_pooled). Returns the plan and
        the indices of the linear ops so treated. Traces (keep=True) run the per-op plan: the
        linear's own output is needed there."""
        plan, pooled = list(self._plan), []
        for i, lin in enumerate(self._descs):
            rd = self._readers.get(i, [])
            if len(rd) != 1 or not kernels.poolable(lin, self._descs[rd[0]]):
                continue
            if not all(lin.inputs[p].kind == SlotKind.WEIGHT for p in range(1, len(lin.inputs))):
                continue
            j = rd[0]
            consts = [np.asarray(self.bundle.weight_arrays[self.program.weights[lin.inputs[p].index].name])
                      for p in range(1, len(lin.inputs))]
            passthrough, fused = kernels.prepare_pooled(lin, self._descs[j], consts, self.device)
            plan[i], plan[j] = (passthrough, self._plan[i][1]), (fused, self._plan[j][1])
            pooled.append(i)
        return plan, tuple(pooled)

    def _source(self, s):
        """What an input slot reads at run time: a weight tensor, _UNIT (the unit input) or op index j."""
        if s.kind == SlotKind.WEIGHT:
            return self._weights[s.index]
        return _UNIT if s.kind == SlotKind.UNIT_INPUT else s.index

    def _prepare(self, d):
        """(closure, sources): constant inputs (weights) are prepared once (kernels.prepare_op)."""
        const_pos = kernels.CONST_INPUTS.get(d.opcode, ())
        const_pos = tuple(i for i in const_pos if i < len(d.inputs))
        if all(d.inputs[i].kind == SlotKind.WEIGHT for i in const_pos):
            consts = [np.asarray(self.bundle.weight_arrays[self.program.weights[d.inputs[i].index].name])
                      for i in const_pos]
            fn = kernels.prepare_op(d, consts, self.device)
            dyn = [i for i in range(len(d.inputs)) if i not in const_pos]
            return fn, tuple(self._source(d.inputs[i]) for i in dyn)
        # a weight operand computed at run time: prepare on every call (rare; still exact)
        return (lambda xs, d=d: kernels.run_op(d, xs)), tuple(self._source(s) for s in d.inputs)

    def _forward(self, unit: torch.Tensor, keep: bool) -> list[torch.Tensor | None]:
        """Every op output (keep=True: the per-op plan, each output as the spec defines it), or the
        last one (keep=False: the honest plan, intermediates dropped after their last reader)."""
        plan = self._plan if keep else self._honest
        outs: list[torch.Tensor | None] = [None] * len(plan)
        for j, (fn, srcs) in enumerate(plan):
            outs[j] = fn([unit if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs])
            if not keep:
                for i in self._frees[j]:
                    outs[i] = None
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
    def run_units(self, units: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Outputs [k, *output.shape] of k units [k, *input.shape]. The units are concatenated
        along axis 0 and run `self.rows` rows per forward pass: several units per pass, or part of
        one (same bits as one unit at a time, docs/protocol.md 2.5). `progress(units_done)` is
        called after each pass (units_done counts whole units)."""
        t = self.program.input.type
        out_t = self.program.output_type
        b, b_out = t.shape[0], out_t.shape[0]
        units = np.ascontiguousarray(units, dtype=NP_DTYPE[t.dtype]).reshape(-1, *t.shape)
        rows = units.reshape(-1, *t.shape[1:])
        outs = np.empty((len(units) * b_out, *out_t.shape[1:]), dtype=NP_DTYPE[out_t.dtype])
        for r in range(0, len(rows), self.rows):
            y = self._pass(torch.from_numpy(rows[r : r + self.rows]).to(self.device))
            o = r * b_out // b  # whole rows: self.rows is a multiple of the program's granule
            outs[o : o + y.shape[0]] = y.cpu().numpy()
            if progress is not None:
                progress(min(len(rows), r + self.rows) // b)
        return outs.reshape(len(units), *out_t.shape)

    def _pass(self, x: torch.Tensor) -> torch.Tensor:
        """The last op's output of one forward pass over rows `x`. On CUDA the pass is captured once
        per shape as a CUDA graph and replayed (one launch instead of a few per op: the honest plan
        is launch-bound at small batches); the graph runs the same kernels on the same data, so the
        bits are the eager pass's. Any capture failure falls back to eager passes for good."""
        if self.device.type != "cuda" or self._graphs is None:
            return self._forward(x, keep=False)[-1]
        key = tuple(x.shape)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(x)
            except Exception:  # noqa: BLE001 - a kernel that syncs or refuses capture: stay eager
                self._graphs = None
                torch.cuda.synchronize()
                return self._forward(x, keep=False)[-1]
        graph, static_x, static_y = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y

    def _capture(self, x: torch.Tensor):
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: lazy state (index tables, _int_mm probes) is built here
            for _ in range(2):
                self._forward(static_x, keep=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = self._forward(static_x, keep=False)[-1]
        return graph, static_x, static_y

    @torch.inference_mode()
    def run(self, units: np.ndarray, progress: Callable[[int], None] | None = None) -> RunResult:
        """Every unit of an inputs tensor [U, *input.shape]: outputs, per-unit roots, result root
        (`progress` as in run_units)."""
        t0 = time.perf_counter()
        outs = self.run_units(units, progress)
        t1 = time.perf_counter()
        roots = tuple(merkle.tensor_roots(outs))  # batched over all units (merkle.hash_rows)
        rr = result_root(list(roots))
        t2 = time.perf_counter()
        return RunResult(outs, roots, rr, t1 - t0, t2 - t1)

    def _stream(self, x: torch.Tensor, upto: int, keep: frozenset[int] = frozenset(),
                visit: Callable[[int, torch.Tensor], None] | None = None) -> dict[int, torch.Tensor]:
        """Ops 0..upto of the per-op plan (each output as the spec defines it), every output dropped
        after its last reader (at once if no op reads it), so memory is the honest run's. `visit(j, y)`
        sees each output as it is made; the outputs of the ops in `keep` are returned."""
        outs: list[torch.Tensor | None] = [None] * (upto + 1)
        kept: dict[int, torch.Tensor] = {}
        for j in range(upto + 1):
            fn, srcs = self._plan[j]
            y = fn([x if s is _UNIT else outs[s] if isinstance(s, int) else s for s in srcs])
            if visit is not None:
                visit(j, y)
            if j in keep:
                kept[j] = y
            if j in self._readers:
                outs[j] = y
            for i in self._frees[j]:
                outs[i] = None
        return kept

    @torch.inference_mode()
    def trace_roots(self, unit: np.ndarray) -> list[bytes]:
        """The tensor root of every op output of one unit, from one streaming pass (docs/protocol.md
        7, streaming defence): the same roots as `trace(unit).roots` in the honest run's memory."""
        roots: list[bytes] = []
        self._stream(self._to_device(unit), len(self._plan) - 1,
                     visit=lambda j, y: roots.append(merkle.tensor_root(_flat_bytes(y))))
        return roots

    @torch.inference_mode()
    def op_outputs(self, unit: np.ndarray, ops: Iterable[int]) -> dict[int, bytes]:
        """Canonical bytes of the outputs of `ops` of one unit (as `trace(unit).outputs[j]`), the
        unit re-run only up to the last of them, in streaming mode."""
        want = frozenset(int(j) for j in ops)
        if not want:
            return {}
        if not all(0 <= j < len(self._plan) for j in want):
            raise IndexError(f"op outputs {sorted(want)} outside a program of {len(self._plan)} ops")
        kept = self._stream(self._to_device(unit), max(want), want)
        # one copy at a time: each tensor is released as soon as its bytes exist
        return {j: bytes(_flat_bytes(kept.pop(j))) for j in sorted(want)}

    @torch.inference_mode()
    def trace(self, unit: np.ndarray) -> Trace:
        """Re-run one unit keeping every op output: their roots, trees and the trace root (the
        full-trace path: memory grows with the whole unit; disputes use trace_roots/op_outputs)."""
        x = self._to_device(unit)
        outs = [np.ascontiguousarray(o.cpu().numpy()).tobytes() for o in self._forward(x, keep=True)]
        levels = tuple(merkle.tensor_levels(b) for b in outs)
        root = merkle.roots_root([lv[-1][0] for lv in levels])
        return Trace(np.ascontiguousarray(x.cpu().numpy()).tobytes(), tuple(outs), levels, root)
