"""TEST TOOL for the demo: a single-element corruption inside an attention softmax of a LATER
generated token (a decode step k >= 1 of a text-generation program, docs/protocol.md 2.6) that
really changes the generated text.

Most single flips vanish: the greedy argmax over the vocabulary keeps its winner unless the flip
moves the logits past the runner-up. On the demo's program (8 prompts, 7 decode steps), of all
8,064 flips of the last layer's softmax rows of every (prompt, decode step), 564 change the text,
in 17 of the 56 rows, the rows whose top-1 logit leads the runner-up by little (the smallest
margins: 53, 297, 449, ...; measured with `row_flips`, 95 s). A corruption that does
not change the output is not a wrong result: nobody can or should dispute it. So the search is
aimed, not random:

1. the honest int32 logits of every decode step (the op the step's argmax reads), for every real
   prompt: the (prompt, step) whose top-1 minus top-2 margin is smallest is the easiest to tip;
2. in that step's LAST softmax (the last layer's attention probabilities, closest to the logits),
   at that prompt's query row, every element (every head, every key position) is flipped as the
   cheating worker flips it (faults.FLIP, one bit: +-64 in 1/256) and the ops from the softmax to
   the step's argmax are recomputed with the runtime's own kernels (the ops outside the flip's
   reach read the honest outputs); a flip counts when the step's token changes;
3. of those, the one that moves the logits most (the largest lead of the new token over the honest
   one) is chosen. If no flip of that row changes the token, the next-smallest margins are tried
   (8 rows), then the same rows' earlier layers.

The result names a `faults.Fault` (unit, op, element) for the cheating worker. It runs in about a
second on the demo's program (two cores). Adapter code (torch through the runtime); used by the
demo and its tests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from gpumesh.client.core.ops.types import Opcode, SlotKind
from gpumesh.node.runtime import kernels
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import NP_DTYPE, ProgramBundle
from gpumesh.node.worker.faults import FLIP, Fault


@dataclass(frozen=True)
class SoftmaxFlip:
    """One element of a decode step's softmax whose flip changes that step's token."""

    unit: int
    row: int  # the prompt's row in its unit (prompt index = unit * batch + row)
    step: int  # decode step k >= 1: its argmax is generated token k + 1
    op: int
    op_name: str
    layer: int  # the softmax's place among the step's softmaxes (0-based: the block)
    layers: int
    head: int
    heads: int
    key: int  # the key position in the window (0 = the first prompt byte)
    keys: int  # keys the query row reads at this step (prompt window + tokens so far)
    element: int  # flat index in the op output
    margin: int  # honest top-1 minus top-2 int32 logit at this step
    runner_up: int  # the top-2 token
    weight: int  # honest probability, in 1/256
    flipped: int  # the probability after the flip, in 1/256
    honest_token: int
    cheat_token: int
    lead: int  # after the flip: the new token's logit minus the honest token's
    tried: int  # flips evaluated
    changing: int  # of those, the ones that changed the token

    @property
    def fault(self) -> Fault:
        return Fault(self.unit, self.op, self.element)


class Outcome(NamedTuple):
    """One flip's effect on its step's token."""

    element: int
    head: int
    key: int
    token: int  # the step's argmax after the flip
    lead: int  # its logit minus the honest token's, after the flip (0 when the token is unchanged)


def step_of(name: str) -> int:
    """The decode step of an op named `name@k` (export_generate's naming); 0 for the prefill."""
    head, _, tail = name.rpartition("@")
    return int(tail) if head and tail.isdigit() else 0


def describe_op(prog, i: int) -> str:
    """`name, the attention softmax of layer L (of n) at decode step k` (or the op's opcode, or
    `in the prefill`): where op i sits in a generation program."""
    o = prog.ops[i]
    k = step_of(o.name)
    when = f"at decode step {k}" if k else "in the prefill"
    if o.desc.opcode != Opcode.SOFTMAX:
        return f"{o.name}, {o.desc.opcode.name} {when}"
    same = [j for j, p in enumerate(prog.ops) if step_of(p.name) == k and p.desc.opcode == Opcode.SOFTMAX]
    return f"{o.name}, the attention softmax of layer {same.index(i)} (of {len(same)}) {when}"


def _tensor(desc, raw: bytes) -> torch.Tensor:
    out = desc.out
    return torch.from_numpy(np.frombuffer(raw, dtype=NP_DTYPE[out.dtype]).reshape(out.shape).copy())


class FlipSearch:
    """The search over one program's units (module docstring)."""

    def __init__(self, bundle: ProgramBundle, units: np.ndarray, samples: int, executor: Executor | None = None) -> None:
        self.bundle, self.units, self.samples = bundle, units, samples
        self.prog = bundle.program
        self.ops = self.prog.ops
        self.ex = executor or Executor(bundle, "cpu")
        self.batch = self.prog.input.type.shape[0]
        self._weights: dict[int, torch.Tensor] = {}
        self._prepared: dict[int, object] = {}
        self._margins: list[tuple[int, int, int, int, int]] | None = None
        steps: dict[int, list[int]] = {}
        for i, o in enumerate(self.ops):
            steps.setdefault(step_of(o.name), []).append(i)
        self.argmax: dict[int, int] = {}
        self.softmax: dict[int, list[int]] = {}
        for k, idx in steps.items():
            am = [i for i in idx if self.ops[i].desc.opcode == Opcode.ARGMAX]
            sm = [i for i in idx if self.ops[i].desc.opcode == Opcode.SOFTMAX]
            if k >= 1 and am and sm:
                self.argmax[k], self.softmax[k] = am[-1], sm
        if not self.argmax:
            raise ValueError("not a text-generation program with decode steps (argmax + softmax ops named op@k)")

    def _logits_op(self, k: int) -> int:
        (src,) = self.ops[self.argmax[k]].desc.inputs
        return src.index

    def margins(self) -> list[tuple[int, int, int, int, int]]:
        """(margin, unit, row, step, runner-up token) of every real prompt at every decode step,
        smallest margin first (computed once)."""
        if self._margins is not None:
            return self._margins
        steps = sorted(self.argmax)
        logits = {k: self._logits_op(k) for k in steps}
        rows = []
        for u, unit in enumerate(self.units):
            outs = self.ex.op_outputs(unit, logits.values())
            for k in steps:
                lg = _tensor(self.ops[logits[k]].desc, outs[logits[k]]).reshape(self.batch, -1).numpy()
                order = np.argsort(-lg.astype(np.int64), axis=1, kind="stable")  # ties: the first index first
                for b in range(self.batch):
                    if u * self.batch + b < self.samples:
                        first, second = int(order[b, 0]), int(order[b, 1])
                        rows.append((int(lg[b, first]) - int(lg[b, second]), u, b, k, second))
        self._margins = sorted(rows)
        return self._margins

    def _weight(self, i: int) -> torch.Tensor:
        if i not in self._weights:
            name = self.prog.weights[i].name
            self._weights[i] = torch.from_numpy(np.array(self.bundle.weight_arrays[name], copy=True))
        return self._weights[i]

    def _run(self, i: int, xs: list[torch.Tensor]) -> torch.Tensor:
        """Op i on its inputs, prepared once as the executor prepares it (kernels.prepare_op: the
        constant operands fixed, the rest passed per call), so the same kernels give the same bits."""
        if i not in self._prepared:
            d = self.ops[i].desc
            pos = tuple(p for p in kernels.CONST_INPUTS.get(d.opcode, ()) if p < len(d.inputs))
            if pos and all(d.inputs[p].kind == SlotKind.WEIGHT for p in pos):
                fn = kernels.prepare_op(d, [xs[p].numpy() for p in pos], torch.device("cpu"))
                self._prepared[i] = lambda ys, fn=fn, pos=pos: fn([y for p, y in enumerate(ys) if p not in pos])
            else:
                self._prepared[i] = lambda ys, d=d: kernels.run_op(d, ys)
        return self._prepared[i](xs)

    def _reach(self, j: int, last: int) -> tuple[list[int], set[int]]:
        """Ops j..last that read op j's output (directly or not), and the other op outputs they read."""
        dep, order = {j}, [j]
        for i in range(j + 1, last + 1):
            if any(s.kind == SlotKind.OP_OUTPUT and s.index in dep for s in self.ops[i].desc.inputs):
                dep.add(i)
                order.append(i)
        need = {s.index for i in order for s in self.ops[i].desc.inputs
                if s.kind == SlotKind.OP_OUTPUT and s.index not in dep}
        return order, need

    @torch.inference_mode()
    def row_flips(self, u: int, b: int, k: int, layer: int = -1) -> tuple[torch.Tensor, int, list[Outcome]]:
        """Every flip of decode step k's softmax of `layer` (default: the last) at row b of unit u:
        (the honest softmax output, the honest token, each flip's outcome: the step's token after
        it). For the last layer the step's token is the whole story (the flip reaches no K or V
        row); an earlier layer's flip may also change later steps through the cache, which this
        does not count: its hits are sure, its misses are not."""
        j, a = self.softmax[k][layer], self.argmax[k]
        lg = self._logits_op(k)
        order, need = self._reach(j, a)
        raw = self.ex.op_outputs(self.units[u], need | {j, a})
        honest = {i: _tensor(self.ops[i].desc, raw[i]) for i in raw}
        y0 = honest[j]
        _, heads, q, keys = y0.shape
        if q != 1:
            raise ValueError(f"{self.ops[j].name}: a decode step's softmax has one query row, not {q}")
        tok0 = int(honest[a].reshape(self.batch, -1)[b, 0])
        out = []
        for h in range(heads):
            for key in range(keys):
                e = (b * heads + h) * keys + key
                y = y0.clone()
                flat = y.view(-1)
                flat[e] = flat[e] ^ FLIP  # exactly the cheating worker's flip (faults.FaultyExecutor)
                cur = {j: y}
                for i in order[1:]:
                    xs = [self._weight(s.index) if s.kind == SlotKind.WEIGHT else cur.get(s.index, honest.get(s.index))
                          for s in self.ops[i].desc.inputs]
                    cur[i] = self._run(i, xs)
                tok = int(cur[a].reshape(self.batch, -1)[b, 0])
                row = cur[lg].reshape(self.batch, -1)[b]
                out.append(Outcome(e, h, key, tok, int(row[tok]) - int(row[tok0])))
        return y0, tok0, out

    def try_row(self, margin: int, u: int, b: int, k: int, runner_up: int = -1, layer: int = -1) -> SoftmaxFlip | None:
        """The flip of row b of unit u at decode step k (in `layer`'s softmax) that tips the token
        furthest, or None."""
        y0, tok0, outs = self.row_flips(u, b, k, layer)
        hits = [o for o in outs if o.token != tok0]
        if not hits:
            return None
        best = max(hits, key=lambda o: (o.lead, -o.element))
        j = self.softmax[k][layer]
        w = int(y0.view(-1)[best.element]) + 128  # probabilities: scale 1/256, zero point -128 (2.2.1)
        return SoftmaxFlip(unit=u, row=b, step=k, op=j, op_name=self.ops[j].name,
                           layer=self.softmax[k].index(j),
                           layers=len(self.softmax[k]), head=best.head, heads=y0.shape[1], key=best.key,
                           keys=y0.shape[-1], element=best.element, margin=margin, runner_up=runner_up, weight=w,
                           flipped=((w - 128) ^ FLIP) + 128, honest_token=tok0, cheat_token=best.token,
                           lead=best.lead, tried=len(outs), changing=len(hits))

    def find(self, rows: int = 8) -> SoftmaxFlip | None:
        """The flip in the last layer's softmax of the smallest-margin (prompt, step) whose token
        some flip tips, trying the `rows` smallest margins in order; failing that, the same rows'
        earlier layers, from the last to the first."""
        top = self.margins()[:rows]
        depth = max(len(v) for v in self.softmax.values())
        for layer in range(-1, -depth - 1, -1):
            for margin, u, b, k, second in top:
                if len(self.softmax[k]) >= -layer:
                    hit = self.try_row(margin, u, b, k, second, layer)
                    if hit is not None:
                        return hit
        return None
