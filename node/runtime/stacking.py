"""Stacking several units into one forward pass (docs/protocol.md 2.5).

A job's unit is one batch of the program's input shape; small units (the digits MLP's 64x64 int8
inputs) spend most of their time in per-op overhead. Every v1 op is independent along axis 0 under
the conditions checked here, so S units concatenated along axis 0 ([S*B, ...] instead of [B, ...])
give, row block by row block, exactly the outputs of the S separate forwards:
- linear contracts the last axis (rank >= 2 by the typing rules), requant/relu/add are elementwise
  (per-channel parameters run along the last axis, so requant needs rank >= 2), im2col and the pools
  work per sample of an NHWC tensor, argmax reduces the last axis (rank >= 2 needed);
- reshape is row-major: unit u's elements form one contiguous block of the stacked input, and the
  stacked output `reshape(-1, *out[1:])` cuts the same block into unit u's output rows;
- transpose keeps axis 0 in place only when perm[0] == 0.
A weight read where data is expected (an add of a constant, a linear whose W is computed) is not
stacked. Pure: no torch; the executor imports it.
"""

from __future__ import annotations

from gpumesh.client.core.ops.types import Opcode, OpDescriptor, SlotKind
from gpumesh.client.core.program import Program

#: Input positions read as prepared constants (weights), per opcode; the rest are data tensors.
CONST_INPUTS = {Opcode.LINEAR: (1, 2, 3), Opcode.REQUANT: (1,)}

#: Bytes of the largest per-op temporary of one stacked pass the executor aims at, and the most
#: units stacked. An op that requantizes (linear, requant, add, avgpool) holds a float64 temporary
#: per output element (8 bytes); other ops their output's own width. Measured on the 2-core build VM
#: (bench/bench_runtime.py and a sweep of units per pass, digits models at batch 64): the MLP peaks
#: at 64 units (4096 rows; its largest linear output 4096x128 = 4 MiB of float64), the CNN at 4 units
#: (its largest linear output 256x8x8x32 = 4 MiB of float64); stacking more rows than that loses
#: again once the temporaries leave the cache (MLP 16384 rows: 1.62x float32 eager at the same rows
#: vs 2.15x at 4096).
STACK_BYTES = 4 << 20
MAX_STACK = 64
_FP64_TEMP = (Opcode.LINEAR, Opcode.REQUANT, Opcode.ADD, Opcode.AVGPOOL)


def op_blocker(d: OpDescriptor) -> str | None:
    """Why this op, fed data tensors stacked along axis 0, would not give the stacked outputs."""
    rank = len(d.inputs[0].type.shape)
    if d.opcode in (Opcode.REQUANT, Opcode.ARGMAX, Opcode.LINEAR) and rank < 2:
        return f"it works along axis 0 of a rank-{rank} tensor"
    if d.opcode == Opcode.TRANSPOSE and d.perm[0] != 0:
        return "it moves axis 0"
    return None


def stack_blocker(program: Program) -> str | None:
    """Why the units of `program` cannot be stacked along axis 0, or None when they can."""
    for j, op in enumerate(program.ops):
        d = op.desc
        const = CONST_INPUTS.get(d.opcode, ())
        for i, s in enumerate(d.inputs):
            if (i in const) != (s.kind == SlotKind.WEIGHT):
                return f"op {j} ({op.name}) reads {'a weight as data' if i not in const else 'a computed constant'}"
        why = op_blocker(d)
        if why is not None:
            return f"op {j} ({op.name}): {why}"
    return None


def stack_factor(program: Program, budget: int = STACK_BYTES) -> int:
    """Units per forward pass: 1 when stacking is not possible, else as many as keep the largest
    per-op temporary within `budget` bytes (at least 1, at most MAX_STACK)."""
    if stack_blocker(program) is not None:
        return 1
    peak = max([program.input.type.nbytes, *(op.desc.out.count * (8 if op.desc.opcode in _FP64_TEMP else
                                                                   op.desc.out.dtype.width) for op in program.ops)])
    return max(1, min(MAX_STACK, budget // peak))
