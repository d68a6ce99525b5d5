"""Game math of the bisection dispute game, mirrored 1:1 with contracts/src/libraries/
LibDissection.sol and the state of contracts/src/dispute/DisputeGame.sol (docs/protocol.md section 5).

Pure: no I/O. Imported by the dispute strategies (gpumesh.node.dispute), the chain adapter that
decodes game state, and tests. A position is (height, index): the node `height` levels above the
leaves whose leftmost leaf is index << height. A round reveals the 2^m descendants m = min(k, height)
levels below the disputed node; the challenger picks one with its in-block path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.merkle import depth_for, leaf_count, node_hash, roots_zero, zero_subtree

#: k of the k-ary dissection (Constants.SPLIT_BITS); the deployed game's `splitBits()` is authoritative.
SPLIT_BITS = 4
#: Chess-clock budget per side, the deployment default (Constants.GAME_CLOCK_SECONDS).
GAME_CLOCK_SECONDS = 302_400
#: Burned share of a losing challenger's bond, basis points (Constants.BOND_BURN_BPS), rounded up.
BOND_BURN_BPS = 5_000
#: Share of an answered data request's bond paid to the worker (Constants.DATA_FEE_BPS), rounded up.
DATA_FEE_BPS = 5_000
#: Share of a slashed stake paid to the earliest lost game's challenger (Constants.SLASH_CHALLENGER_BPS),
#: rounded down; the rest is burned.
SLASH_CHALLENGER_BPS = 5_000
#: Largest unit output a data request's answer carries (Constants.MAX_UNIT_OUTPUT_BYTES).
MAX_UNIT_OUTPUT_BYTES = 65_536
BPS = 10_000


def bps_up(amount: int, bps: int) -> int:
    """Constants.bpsUp: ceil(amount * bps / 10000), a share that never rounds to zero."""
    return -(-amount * bps // BPS)


def bond_burn(bond: int) -> int:
    """What a lost challenge burns of its bond (the worker is credited the rest)."""
    return bps_up(bond, BOND_BURN_BPS)


def slash_paid(stake: int) -> int:
    """What the earliest lost game's challenger is paid of a slashed stake (the rest is burned)."""
    return stake * SLASH_CHALLENGER_BPS // BPS


class Phase(IntEnum):
    """IDisputeGame.Phase, same order."""

    NONE = 0
    UNIT_DESCENT = 1
    TRACE_COMMIT = 2
    TRACE_DESCENT = 3
    OP_REVEAL = 4
    TENSOR_DESCENT = 5
    LEAF_REVEAL = 6
    ONE_STEP = 7
    DATA_REQUEST = 8  # a data-availability request: the worker must answerData
    RESOLVED = 9

    @property
    def is_descent(self) -> bool:
        return self in (Phase.UNIT_DESCENT, Phase.TRACE_DESCENT, Phase.TENSOR_DESCENT)


class Side(IntEnum):
    WORKER = 0
    CHALLENGER = 1


class Outcome(IntEnum):
    OPEN = 0
    WORKER_WON = 1
    CHALLENGER_WON = 2


class Reason(IntEnum):
    ONE_STEP = 0
    TIMEOUT = 1
    NON_CANONICAL_PADDING = 2
    DATA_SERVED = 3  # the worker answered a data request


# ---------------------------------------------------------------- LibDissection twins


def step_bits(height: int, k: int) -> int:
    """Levels one reveal/pick round descends at `height`."""
    return min(height, k)


def fold_children(children: Sequence[bytes]) -> bytes:
    """Root of 2^m revealed descendants."""
    level = list(children)
    if not level or len(level) & (len(level) - 1):
        raise ValueError("a reveal has a power-of-two number of children")
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def child_index(index: int, m: int, c: int) -> int:
    return (index << m) | c


def is_padding(height: int, index: int, count: int) -> bool:
    """The subtree at (height, index) lies entirely beyond the first `count` leaves."""
    return (index << height) >= count


def padding_value(phase: Phase, height: int) -> bytes:
    """Canonical value of an all-padding subtree: tensor trees pad with zero leaves, roots trees
    (result, trace) with bytes32(0)."""
    return zero_subtree(height) if phase == Phase.TENSOR_DESCENT else roots_zero(height)


def clock_left(left: int, since: int, now: int) -> tuple[int, bool]:
    """(seconds left, expired) of a clock that had `left` when its turn began at `since`."""
    elapsed = now - since
    if elapsed > left:
        return 0, True
    return left - elapsed, False


def data_bytes_in_leaf(nbytes: int, leaf_index: int) -> int:
    offset = leaf_index * LEAF_BYTES
    if offset >= nbytes:
        return 0
    return min(LEAF_BYTES, nbytes - offset)


def in_block_path(children: Sequence[bytes], c: int) -> list[bytes]:
    """Siblings (bottom first) that rebuild the parent from child `c` of a revealed block."""
    level = list(children)
    path = []
    while len(level) > 1:
        path.append(level[c ^ 1])
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        c >>= 1
    return path


def rounds(depth: int, k: int) -> int:
    """Reveal/pick rounds to dissect a tree of `depth` (two moves each)."""
    return -(-depth // k)


def descent_depths(num_units: int, num_ops: int, out_bytes: int) -> tuple[int, int, int]:
    return depth_for(num_units), depth_for(num_ops), depth_for(leaf_count(out_bytes))


def total_moves(num_units: int, num_ops: int, out_bytes: int, k: int) -> int:
    """Moves of a game played to the one-step: 2 per round, plus commitTrace, proveOp,
    revealLeaf and step."""
    return 4 + 2 * sum(rounds(d, k) for d in descent_depths(num_units, num_ops, out_bytes))


# ---------------------------------------------------------------- game state


@dataclass(frozen=True)
class GameSnapshot:
    """What a player knows of one game: IDisputeGame.Game plus the revealed nodes.

    `children`: the block the worker revealed this round (empty unless the challenger is to
    pick). `trace_nodes`: every trace-tree node (height, index) -> hash that the worker's trace
    reveals fixed (whole revealed blocks, inner nodes included): the challenger needs them to
    prove agreed slots against the worker's trace root.
    """

    game_id: int
    phase: Phase
    turn: Side
    move_no: int
    height: int
    index: int
    count: int
    node: bytes
    split_bits: int
    now: int = 0
    last_move_at: int = 0
    worker_clock: int = 0
    challenger_clock: int = 0
    unit_index: int = 0
    op_index: int = 0
    num_units: int = 0
    num_ops: int = 0
    num_weights: int = 0
    out_bytes: int = 0
    trace_root: bytes = b""
    ops_root: bytes = b""
    program_root: bytes = b""
    inputs_root: bytes = b""
    children: tuple[bytes, ...] = ()
    leaf: bytes = b""
    trace_nodes: Mapping[tuple[int, int], bytes] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return step_bits(self.height, self.split_bits)

    def mover_clock(self) -> tuple[int, bool]:
        left = self.worker_clock if self.turn == Side.WORKER else self.challenger_clock
        return clock_left(left, self.last_move_at, self.now)


def block_nodes(height: int, index: int, children: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """All nodes of a revealed block under (height, index), children at height - m, inner nodes
    computed, keyed (height, index) in the whole tree."""
    m = len(children).bit_length() - 1
    out: dict[tuple[int, int], bytes] = {}
    level = list(children)
    h = height - m
    first = index << m
    while True:
        for i, v in enumerate(level):
            out[(h, first + i)] = v
        if len(level) == 1:
            return out
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        h += 1
        first >>= 1
