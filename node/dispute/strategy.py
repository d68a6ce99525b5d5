"""Honest dispute strategies: pure functions from (GameSnapshot, own data) to the next Action.

The worker answers from the data it committed (its per-unit output roots and, once a unit is
disputed, that unit's trace); the challenger from the same data computed by itself. Verifier-specific
work (which bytes form an element, how input proofs are encoded) sits behind `StepProver`.
Imported by the worker and watchtower daemons and by tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.game import (
    GameSnapshot,
    Phase,
    Side,
    child_index,
    data_bytes_in_leaf,
    in_block_path,
)
from gpumesh.client.core.merkle import (
    depth_for,
    inclusion_proof,
    op_leaf,
    roots_levels,
    roots_zero,
    tensor_levels,
    zero_subtree,
)
from gpumesh.node.dispute.actions import (
    Action,
    AnswerData,
    CommitTrace,
    Pick,
    ProveOp,
    ResolveTimeout,
    Reveal,
    RevealLeaf,
    Step,
)


class DisputeStrategyError(Exception):
    """The game reached a state an honest player cannot be in (a bug or foreign data)."""


# ---------------------------------------------------------------- data


def node_at(levels: Sequence[Sequence[bytes]], height: int, index: int, pad: Callable[[int], bytes]) -> bytes:
    """Node (height, index) of a tree whose levels hold only the data-bearing prefix."""
    lvl = levels[height]
    return lvl[index] if index < len(lvl) else pad(height)


class TraceView:
    """One unit's trace as the strategies and provers use it: `roots` (every op output's tensor
    root), `trace_levels` / `trace_root`, `tensor(op)` (canonical bytes), `tensor_levels(op)`,
    `leaf(op, i)`, and `prefetch(ops)` (a hint that those tensors are needed next). Two kinds:
    UnitTrace holds the whole trace in memory (tests, small programs); the daemons use
    gpumesh.node.dispute.play.StreamingTrace, which keeps only the roots (docs/protocol.md 7)."""

    roots: list[bytes]

    def tensor(self, op: int) -> bytes:
        raise NotImplementedError

    def tensor_levels(self, op: int) -> list[list[bytes]]:
        raise NotImplementedError

    def prefetch(self, ops: Iterable[int]) -> None:
        """Nothing to do when every output is held."""

    @cached_property
    def trace_levels(self) -> list[list[bytes]]:
        return roots_levels(self.roots)

    @property
    def trace_root(self) -> bytes:
        return self.trace_levels[-1][0]

    def leaf(self, op: int, index: int) -> bytes:
        return leaf_of(self.tensor(op), index)


class UnitTrace(TraceView):
    """Every op output of one unit (canonical bytes; a corrupt player may carry extra padding
    bytes up to the full tree), with its tensor trees and trace tree, computed once."""

    def __init__(self, tensors: Sequence[bytes]) -> None:
        if not tensors:
            raise ValueError("a trace has at least one op output")
        self.tensors = tuple(tensors)

    def tensor(self, op: int) -> bytes:
        return self.tensors[op]

    def tensor_levels(self, op: int) -> list[list[bytes]]:
        return self._tensor_levels[op]

    @cached_property
    def _tensor_levels(self) -> list[list[list[bytes]]]:
        return [tensor_levels(t) for t in self.tensors]

    @cached_property
    def roots(self) -> list[bytes]:
        return [lv[-1][0] for lv in self._tensor_levels]


def leaf_of(data: bytes, index: int) -> bytes:
    """Leaf `index` of a tensor's canonical bytes, zero-padded to LEAF_BYTES."""
    chunk = data[index * LEAF_BYTES : (index + 1) * LEAF_BYTES]
    return chunk + bytes(LEAF_BYTES - len(chunk))


@dataclass(frozen=True)
class Program:
    """The public program facts the game uses (header and descriptors)."""

    num_weights: int
    descriptors: tuple[bytes, ...]

    @property
    def num_ops(self) -> int:
        return len(self.descriptors)

    @cached_property
    def ops_levels(self) -> list[list[bytes]]:
        return roots_levels([op_leaf(d) for d in self.descriptors])

    @property
    def ops_root(self) -> bytes:
        return self.ops_levels[-1][0]


@dataclass(frozen=True)
class PlayerData:
    """One player's view of a job: the program, its unit output roots (result-tree leaves, in
    unit order), and its trace of any unit (re-executed on demand, cached by the caller)."""

    program: Program
    unit_roots: tuple[bytes, ...]
    trace: Callable[[int], TraceView]
    #: The worker's canonical output bytes of a unit (answers data requests); None on the challenger side.
    unit_output: Callable[[int], bytes] | None = None
    result_levels: list[list[bytes]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "result_levels", roots_levels(list(self.unit_roots)))


class StepProver(Protocol):
    """Verifier-specific half of the one-step (ToyStepper in tests, Int8Verifier for real)."""

    def element_bytes(self, descriptor: bytes) -> int:
        """Bytes per element of the op's output tensor."""
        ...

    def proofs(self, snap: GameSnapshot, descriptor: bytes, element_index: int, agreed: AgreedTrace) -> bytes:
        """The encoded input proofs for output element `element_index` of op snap.op_index."""
        ...


@dataclass(frozen=True)
class AgreedTrace:
    """Slots before the disputed op, which both players agree on: the challenger's own values,
    with paths against the WORKER's trace root (from its own data and the revealed nodes)."""

    own: TraceView
    slot_path: Callable[[int], list[bytes]]


# ---------------------------------------------------------------- strategies


def _own_levels(snap: GameSnapshot, data: PlayerData) -> tuple[list[list[bytes]], Callable[[int], bytes]]:
    if snap.phase == Phase.UNIT_DESCENT:
        return data.result_levels, roots_zero
    tr = data.trace(snap.unit_index)
    if snap.phase == Phase.TRACE_DESCENT:
        return tr.trace_levels, roots_zero
    return tr.tensor_levels(snap.op_index), zero_subtree


def _timeout(snap: GameSnapshot, me: Side) -> Action | None:
    if snap.phase in (Phase.NONE, Phase.RESOLVED) or snap.turn == me:
        return None
    _, expired = snap.mover_clock()
    return ResolveTimeout(snap.game_id) if expired else None


def worker_move(snap: GameSnapshot, data: PlayerData) -> Action | None:
    """The worker's next action, or None when it has nothing to do (not its turn, game over)."""
    if (t := _timeout(snap, Side.WORKER)) is not None or snap.turn != Side.WORKER:
        return t
    gid, mv = snap.game_id, snap.move_no
    if snap.phase.is_descent:
        levels, pad = _own_levels(snap, data)
        m, h = snap.m, snap.height - snap.m
        kids = tuple(node_at(levels, h, child_index(snap.index, m, c), pad) for c in range(1 << m))
        return Reveal(gid, mv, kids)
    if snap.phase == Phase.TRACE_COMMIT:
        tr = data.trace(snap.unit_index)
        prog = data.program
        path = inclusion_proof(tr.trace_levels, prog.num_ops - 1, roots_zero)
        return CommitTrace(gid, mv, tr.trace_root, prog.num_ops, prog.num_weights, prog.ops_root, tuple(path))
    if snap.phase == Phase.LEAF_REVEAL:
        return RevealLeaf(gid, mv, data.trace(snap.unit_index).leaf(snap.op_index, snap.index))
    if snap.phase == Phase.DATA_REQUEST and data.unit_output is not None:
        path = inclusion_proof(data.result_levels, snap.unit_index, roots_zero)
        return AnswerData(gid, mv, data.unit_output(snap.unit_index), tuple(path))
    return None


def challenger_move(snap: GameSnapshot, data: PlayerData, prover: StepProver) -> Action | None:
    """The honest challenger's next action: in the trace descent the FIRST child that differs
    from its own (so every earlier slot is agreed), elsewhere any differing child."""
    if (t := _timeout(snap, Side.CHALLENGER)) is not None or snap.turn != Side.CHALLENGER:
        return t
    gid, mv = snap.game_id, snap.move_no
    if snap.phase.is_descent:
        levels, pad = _own_levels(snap, data)
        m, h = snap.m, snap.height - snap.m
        for c, theirs in enumerate(snap.children):
            idx = child_index(snap.index, m, c)
            # A differing all-padding child is non-canonical: picking it wins at once.
            if theirs != node_at(levels, h, idx, pad):
                return Pick(gid, mv, c, theirs, tuple(in_block_path(snap.children, c)))
        raise DisputeStrategyError(f"game {gid}: every revealed child agrees with our data")
    prog = data.program
    if snap.phase == Phase.OP_REVEAL:
        path = inclusion_proof(prog.ops_levels, snap.op_index, roots_zero)
        return ProveOp(gid, mv, prog.descriptors[snap.op_index], tuple(path))
    if snap.phase == Phase.ONE_STEP:
        desc = prog.descriptors[snap.op_index]
        own = data.trace(snap.unit_index)
        e = first_differing_element(snap, own.leaf(snap.op_index, snap.index), prover.element_bytes(desc))
        agreed = AgreedTrace(own, lambda j: agreed_slot_path(snap, own, j))
        return Step(gid, mv, desc, e, snap.leaf, prover.proofs(snap, desc, e, agreed))
    return None


def first_differing_element(snap: GameSnapshot, own_leaf: bytes, elem: int) -> int:
    """Global index of the first data element of the revealed leaf that differs from ours."""
    valid = data_bytes_in_leaf(snap.out_bytes, snap.index)
    for off in range(0, valid, elem):
        if snap.leaf[off : off + elem] != own_leaf[off : off + elem]:
            return (snap.index * LEAF_BYTES + off) // elem
    raise DisputeStrategyError(f"game {snap.game_id}: the revealed leaf agrees with ours")


def agreed_slot_path(snap: GameSnapshot, own: TraceView, j: int) -> list[bytes]:
    """Path of slot j < op_index in the worker's trace tree. Subtrees wholly left of the disputed
    op are agreed (own values); the rest are children of ancestors of the disputed slot, all
    fixed by the revealed blocks (snap.trace_nodes)."""
    t = snap.op_index
    if not 0 <= j < t:
        raise ValueError(f"slot {j} is not agreed (disputed op {t})")
    path = []
    for h in range(depth_for(snap.num_ops)):
        s = (j >> h) ^ 1
        if ((s + 1) << h) <= t:
            path.append(node_at(own.trace_levels, h, s, roots_zero))
        else:
            path.append(snap.trace_nodes[(h, s)])
    return path
