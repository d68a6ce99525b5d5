"""Forward passes over rows of stacked units (docs/protocol.md 2.5).

A job's unit is one batch of the program's input shape. Small units (the digits MLP's 64x64 int8
inputs) spend most of their time in per-op overhead; large ones (a 3x32x32 CNN at batch 256) stream
tens of MiB of temporaries through DRAM at every op. Every v1 op is independent along axis 0 under
the conditions checked here, so the units of a job concatenated along axis 0 ([U*B, ...] instead
of U times [B, ...]) can be run in passes of any R rows that cut every tensor of the program at a
whole row (R a multiple of `granule`): several units per pass, or part of one. Row block by row
block, the outputs are exactly those of the U separate forwards:
- linear contracts the last axis (rank >= 2 by the typing rules), requant/relu/add are elementwise
  (per-channel parameters run along the last axis, so requant needs rank >= 2), im2col and the pools
  work per sample of an NHWC tensor, argmax reduces the last axis (rank >= 2 needed);
- reshape is row-major: unit u's elements form one contiguous block of the stacked input, and the
  stacked output `reshape(-1, *out[1:])` cuts the same block into unit u's output rows;
- transpose keeps axis 0 in place only when perm[0] == 0; concat and slice along an axis >= 1 copy
  each row of axis 0 on its own, along axis 0 they would mix or cut units.
A weight read where data is expected (an add of a constant, a linear whose W is computed) is not
stacked. Pure: no torch; the executor imports it.
"""

from __future__ import annotations

import math

from gpumesh.client.core.ops.types import Opcode, OpDescriptor, SlotKind
from gpumesh.client.core.program import Program

#: Input positions read as prepared constants (weights), per opcode; the rest are data tensors. The
#: tables of lut, gather, softmax and rope and layernorm's gamma and beta are weights by the typing rules.
CONST_INPUTS = {Opcode.LINEAR: (1, 2, 3), Opcode.REQUANT: (1,), Opcode.LUT: (1,), Opcode.GATHER: (1,),
                Opcode.SOFTMAX: (1,), Opcode.LAYERNORM: (1, 2), Opcode.ROPE: (1,)}

#: Bytes of the largest per-op temporary of one pass the executor aims at, and the most units per
#: pass. An op that requantizes (linear, requant, add, avgpool) holds a float64 temporary per output
#: element (8 bytes); other ops their output's own width. A sweep of the budget on the 2-core build
#: VM (rows per pass, samples/s of Executor.run_units; linear and add ops also run in row blocks of
#: their own, kernels.BLOCK_ELEMENTS): digits MLP b64 2 MiB 2048 rows 8.5M/s, 4 MiB 4096 9.4M/s,
#: 8 MiB 4096 9.7M/s (capped at 64 units); digits CNN b64 128 rows 247k/s, 256 273k/s, 512 280k/s,
#: 1024 277k/s, 2048 260k/s; 3x32x32 CNN b256 4 rows 8k/s, 16 rows 9k/s, 64 rows 8k/s.
STACK_BYTES = 8 << 20
MAX_STACK = 64
#: On CUDA passes are larger: a GPU wants many rows per launch and has the memory for them.
STACK_BYTES_CUDA = 256 << 20
_FP64_TEMP = (Opcode.LINEAR, Opcode.REQUANT, Opcode.ADD, Opcode.AVGPOOL, Opcode.SUMREQUANT)


def op_blocker(d: OpDescriptor) -> str | None:
    """Why this op, fed data tensors stacked along axis 0, would not give the stacked outputs."""
    rank = len(d.inputs[0].type.shape)
    if d.opcode in (Opcode.REQUANT, Opcode.ARGMAX, Opcode.LINEAR) and rank < 2:
        return f"it works along axis 0 of a rank-{rank} tensor"
    # chunkmax of pairs and pairargmax reduce the axis before the pair axis
    pair_input = d.opcode == Opcode.PAIRARGMAX or (d.opcode == Opcode.CHUNKMAX and d.attr("pairs"))
    if (pair_input and rank < 3) or (d.opcode == Opcode.CHUNKMAX and rank < 2):
        return f"it works along axis 0 of a rank-{rank} tensor"
    # topk ranks its row: the last axis of values, the axis before the pair axis of pairs
    if d.opcode == Opcode.TOPK and rank < 2 + d.attr("pairs"):
        return f"it works along axis 0 of a rank-{rank} tensor"
    # rope's and causal softmax's positions are the row index along axis -2: with rank 2 that is
    # axis 0, which a pass may cut inside a unit (docs/protocol.md 2.2.1, 2.2.3)
    if rank == 2 and (d.opcode == Opcode.ROPE or (d.opcode == Opcode.SOFTMAX and d.attr("causal"))):
        return "its positions run along axis 0"
    if d.opcode == Opcode.TRANSPOSE and d.perm[0] != 0:
        return "it moves axis 0"
    if d.opcode in (Opcode.CONCAT, Opcode.SLICE) and d.attr("axis") == 0:
        return "it joins or cuts axis 0"
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


def granule(program: Program) -> int:
    """The fewest input rows that map to whole rows of every tensor of the program: a block of b
    input rows is b * L_t / L_in rows of a tensor whose axis 0 has L_t (reshape may change it), so b
    must be a multiple of L_in / gcd(L_in, L_t) for every t."""
    rows_in = program.input.type.shape[0]
    g = 1
    for op in program.ops:
        g = math.lcm(g, rows_in // math.gcd(rows_in, op.desc.out.shape[0]))
    return g


def pass_rows(program: Program, budget: int = STACK_BYTES) -> int:
    """Input rows per forward pass: one unit's (B) when stacking is not possible; else the multiple
    of `granule` that keeps the largest per-op temporary of a pass within `budget` bytes (at least
    one granule, at most MAX_STACK units)."""
    rows_in = program.input.type.shape[0]
    if stack_blocker(program) is not None:
        return rows_in
    peak = max([program.input.type.nbytes, *(op.desc.out.count * (8 if op.desc.opcode in _FP64_TEMP else
                                                                   op.desc.out.dtype.width) for op in program.ops)])
    g = granule(program)
    rows = budget * rows_in // peak // g * g
    return max(g, min(MAX_STACK * rows_in, rows))

