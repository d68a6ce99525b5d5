"""Actions a dispute player can take: one frozen dataclass per DisputeGame entry point.

Each action names the game and the move number it answers, so a responder that sends it twice
gets DisputeGame_StaleMove instead of a wrong move. Imported by the strategies and the responders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reveal:
    """Worker: the 2^m descendants of the disputed node (DisputeGame.reveal)."""

    game_id: int
    move_no: int
    children: tuple[bytes, ...]


@dataclass(frozen=True)
class Pick:
    """Challenger: dispute child `c` of the revealed block, with its in-block path (DisputeGame.pick)."""

    game_id: int
    move_no: int
    c: int
    child: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True)
class CommitTrace:
    """Worker: the disputed unit's trace root and the program header (DisputeGame.commitTrace)."""

    game_id: int
    move_no: int
    trace_root: bytes
    num_ops: int
    num_weights: int
    ops_root: bytes
    output_path: tuple[bytes, ...]


@dataclass(frozen=True)
class ProveOp:
    """Challenger: the disputed op's descriptor and its path in the ops tree (DisputeGame.proveOp)."""

    game_id: int
    move_no: int
    descriptor: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True)
class RevealLeaf:
    """Worker: the LEAF_BYTES of the disputed output leaf (DisputeGame.revealLeaf)."""

    game_id: int
    move_no: int
    leaf: bytes


@dataclass(frozen=True)
class Step:
    """Challenger: one element and the verifier's input proofs (DisputeGame.step)."""

    game_id: int
    move_no: int
    descriptor: bytes
    element_index: int
    leaf: bytes
    proofs: bytes


@dataclass(frozen=True)
class ResolveTimeout:
    """Anyone: the mover's clock ran out (DisputeGame.resolveTimeout)."""

    game_id: int


@dataclass(frozen=True)
class AnswerData:
    """Worker: a data request's unit output bytes and their path in the result tree
    (DisputeGame.answerData)."""

    game_id: int
    move_no: int
    data: bytes
    unit_path: tuple[bytes, ...]


Action = Reveal | Pick | CommitTrace | ProveOp | RevealLeaf | Step | ResolveTimeout | AnswerData
