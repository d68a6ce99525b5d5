"""Top-k over a row of any length as ops the one-step bounds allow (docs/protocol.md 2.2.4): one
topk op when its step is within MAX_STEP_LEAVES / MAX_STEP_ELEMENTS, else chunks of the largest q
that fits (each chunk's k best (value, index) pairs), more levels of pair chunks while the
candidates are still too many, and a final topk over the candidate pairs. The result is bit-identical
to the one op (tests/unit/runtime/test_topk.py), the twin of export.chunk_reductions' argmax lowering.

Pure (program JSON dicts and the op rules); a program builder's helper, no torch.
"""

from __future__ import annotations

from gpumesh.client.core.ops.rules import (
    MAX_STEP_ELEMENTS,
    MAX_STEP_LEAVES,
    check_descriptor,
    expected_out,
    step_reads,
)
from gpumesh.client.core.ops.types import (
    DType,
    Opcode,
    OpDescriptor,
    ProgramError,
    SlotKind,
    SlotRef,
    TensorType,
    make_attrs,
)

#: Default cap on the chunk length of values: a gas target below the bounds (a topk step over a chunk
#: of 16,384 values is ~1.3M gas, over 8,192 ~0.69M: under issue #13's 1M goal; docs/protocol.md 5.7.5).
TOPK_CHUNK = 8192


def _desc(x: TensorType, **attrs: int) -> OpDescriptor:
    a = make_attrs(Opcode.TOPK, **attrs)
    d = OpDescriptor(Opcode.TOPK, (SlotRef(SlotKind.OP_OUTPUT, 0, x),), TensorType(DType.INT32, (1,)), a)
    return OpDescriptor(Opcode.TOPK, d.inputs, expected_out(d), a)


def _fits(x: TensorType, **attrs: int) -> bool:
    try:
        check_descriptor(_desc(x, **attrs))
    except ProgramError:
        return False
    return True


def _step_fits(x: TensorType, **attrs: int) -> bool:
    leaves, scanned = step_reads(_desc(x, **attrs))
    return leaves <= MAX_STEP_LEAVES and scanned <= MAX_STEP_ELEMENTS


def _largest_q(x: TensorType, k: int, pairs: int, cap: int | None) -> int:
    """The largest chunk length q (k <= q <= min(n, cap)) whose step is within the bounds, by
    bisection (the step grows with q); the chunked op must then pass every other rule too (its
    output size)."""
    n = x.shape[-2] if pairs else x.shape[-1]
    lo, hi = k, min(n, cap or n)
    if not _step_fits(x, k=k, q=lo, pairs=pairs):
        raise ProgramError(f"topk: k = {k} does not fit one chunk's one-step")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _step_fits(x, k=k, q=mid, pairs=pairs) else (lo, mid - 1)
    check_descriptor(_desc(x, k=k, q=lo, pairs=pairs))
    return lo


def topk_ops(name: str, source: str, x: TensorType, k: int, chunk: int | None = TOPK_CHUNK) -> list[dict]:
    """Program ops computing topk(x, k) (int32 [.., k] indices, value descending then index
    ascending) of int8 x [.., L] (rank 1..2 when chunked); the last op is named `name`. `chunk`
    caps the chunk length of values (TOPK_CHUNK); None takes the largest the bounds allow. A row
    that fits one step is one op whatever the cap."""
    if x.dtype != DType.INT8:
        raise ProgramError(f"topk: values must be int8, got {x}")
    ops: list[dict] = []
    cur, pairs = source, 0
    while not _fits(x, k=k, q=0, pairs=pairs):
        q = _largest_q(x, k, pairs, None if pairs else chunk)
        d = _desc(x, k=k, q=q, pairs=pairs)
        g = d.out.shape[-3]
        lead = d.out.shape[:-3]
        ops.append({"name": f"{name}.chunks{len(ops) // 2}", "op": "topk", "inputs": [cur],
                    "out": {"dtype": "int32", "shape": list(d.out.shape)}, "attrs": {"k": k, "q": q, "pairs": pairs}})
        flat = TensorType(DType.INT32, (*lead, g * k, 2))
        ops.append({"name": f"{name}.cand{len(ops) // 2}", "op": "reshape", "inputs": [ops[-1]["name"]],
                    "out": {"dtype": "int32", "shape": list(flat.shape)}, "attrs": {}})
        cur, x, pairs = ops[-1]["name"], flat, 1
    d = _desc(x, k=k, q=0, pairs=pairs)
    ops.append({"name": name, "op": "topk", "inputs": [cur], "out": {"dtype": "int32", "shape": list(d.out.shape)},
                "attrs": {"k": k, "q": 0, "pairs": pairs}})
    return ops
