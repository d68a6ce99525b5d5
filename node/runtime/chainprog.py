"""Random chain programs of int8 [N, A, A] op outputs (every op output the same size), for the
streaming-defence tests and bench/bench_defence_memory.py: relu, add of two earlier outputs (so
some outputs live long), transpose of the last two axes and, optionally, linear over the last axis
with an [A, A] weight. Each op reads the previous op's output, and add a second, random earlier one.

Numpy only (no torch); test and bench support.
"""

from __future__ import annotations

import numpy as np

from gpumesh.client.core.ops import DType, Opcode, OpDescriptor, ReqMode
from gpumesh.client.core.ops.types import SlotKind, SlotRef, TensorType, make_attrs
from gpumesh.client.core.program import OpEntry, Program, TensorDecl
from gpumesh.node.runtime.files import ProgramBundle
from gpumesh.node.runtime.randprog import requant_params, values


def chain_program(rng: np.random.Generator, num_ops: int, n: int, a: int, linear: bool = True,
                  argmax: bool = False) -> ProgramBundle:
    """A program of `num_ops` ops over one unit input int8 [n, a, a]; the last op's output is the
    unit output. `linear=False` leaves out the (slow) linear ops. `argmax` appends an argmax over
    the last axis, so the unit output (int32 [n, a]) is small while the trace is large."""
    def draw(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi + 1))

    t = TensorType(DType.INT8, (n, a, a))
    kinds = [Opcode.RELU, Opcode.ADD, Opcode.TRANSPOSE] + ([Opcode.LINEAR] if linear else [])
    weights: list[TensorDecl] = []
    arrays: dict[str, np.ndarray] = {}
    ops: list[OpEntry] = []
    for j in range(num_ops):
        prev = SlotRef(SlotKind.OP_OUTPUT, j - 1, t) if j else SlotRef(SlotKind.UNIT_INPUT, 0, t)
        op = kinds[draw(0, len(kinds) - 1)]
        if op == Opcode.ADD:
            other = SlotRef(SlotKind.OP_OUTPUT, draw(0, j - 1), t) if j else prev
            shift = draw(1, 20)
            attrs = make_attrs(op, za=draw(-128, 127), zb=draw(-128, 127), ma=draw(0, 1 << shift),
                               mb=draw(0, 1 << shift), shift=shift, zy=draw(-128, 127), lo=-128, hi=127)
            d = OpDescriptor(op, (prev, other), t, attrs)
        elif op == Opcode.TRANSPOSE:
            d = OpDescriptor(op, (prev,), t, make_attrs(op, perm=(0, 2, 1)))
        elif op == Opcode.LINEAR:
            w_t, b_t = TensorType(DType.INT8, (a, a)), TensorType(DType.INT32, (a,))
            k = len(weights)
            for name, wt in ((f"w{k}", w_t), (f"b{k}", b_t)):
                weights.append(TensorDecl(name, wt))
                arrays[name] = values(draw, wt.shape, wt.dtype)
            slots = (prev, SlotRef(SlotKind.WEIGHT, k, w_t), SlotRef(SlotKind.WEIGHT, k + 1, b_t))
            d = OpDescriptor(op, slots, t, make_attrs(op, x_zp=draw(-128, 127),
                                                      requant=requant_params(draw, ReqMode.PER_TENSOR)))
        else:
            d = OpDescriptor(op, (prev,), t, make_attrs(op, zp=draw(-128, 127)))
        ops.append(OpEntry(f"op{j}", d, _names(d.inputs, weights)))
    if argmax:
        last = SlotRef(SlotKind.OP_OUTPUT, num_ops - 1, t)
        ops.append(OpEntry("argmax", OpDescriptor(Opcode.ARGMAX, (last,), TensorType(DType.INT32, (n, a)),
                                                  make_attrs(Opcode.ARGMAX)), (f"op{num_ops - 1}",)))
    prog = Program(TensorDecl("x", t), tuple(weights), tuple(ops), {})
    wb = {name: np.ascontiguousarray(arr).tobytes() for name, arr in arrays.items()}
    return ProgramBundle(prog, wb, arrays)


def _names(slots, weights: list[TensorDecl]) -> tuple[str, ...]:
    """The program file's input names of an op's slots (so a chain program saves and loads)."""
    return tuple("x" if s.kind == SlotKind.UNIT_INPUT else weights[s.index].name if s.kind == SlotKind.WEIGHT
                 else f"op{s.index}" for s in slots)


def chain_units(rng: np.random.Generator, bundle: ProgramBundle, count: int) -> np.ndarray:
    """`count` random unit inputs [count, n, a, a] int8 of a chain program."""
    return rng.integers(-128, 128, (count, *bundle.program.input.type.shape), dtype=np.int8)
