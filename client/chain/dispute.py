"""Typed client of the DisputeGame contract (docs/protocol.md section 5): reads (`get_game`, `snapshot`,
`games_of_job`, `credits`...), one write per entry point, and one `*_call` per entry point (a
`Call` that the responders' outbox signs and records BEFORE it is broadcast: TxSender's raw path).

`snapshot(game_id)` turns the on-chain Game plus its events (the block the worker revealed, every
revealed trace-tree node, the revealed leaf) into the pure `gpumesh.client.core.game.GameSnapshot`
the strategies read. Reverts decode to the exceptions of gpumesh.client.chain.errors
(`errors.DisputeGame_StaleMove`, ...). Imported by the worker and watchtower daemons, the CLI and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpumesh.client.chain.contracts import TxResult, _Base
from gpumesh.client.chain.events import find_logs
from gpumesh.client.chain.tx import Call, NonceManager, TxSender, reverts_decoded
from gpumesh.client.chain.types import Address, Wei
from gpumesh.client.core.errors import ChainError
from gpumesh.client.core.game import GameSnapshot, Outcome, Phase, Reason, Side, block_nodes

GameId = int

@dataclass(frozen=True)
class GameState:
    """IDisputeGame.Game, field for field (the on-chain truth of one game)."""

    game_id: GameId
    challenger: Address
    bond: Wei
    worker: Address
    phase: Phase
    turn: Side
    outcome: Outcome
    height: int
    move_no: int
    last_move_at: int
    worker_clock: int
    challenger_clock: int
    index: int
    count: int
    out_bytes: int
    unit_index: int
    op_index: int
    num_ops: int
    num_weights: int
    num_units: int
    job_id: int
    node: bytes
    program_root: bytes
    inputs_root: bytes
    trace_root: bytes
    ops_root: bytes
    op_leaf: bytes

    @classmethod
    def from_abi(cls, game_id: int, t: tuple | dict) -> GameState:
        if isinstance(t, dict):
            t = tuple(t.values())
        (ch, bond, worker, phase, turn, outcome, height, move_no, last, wclock, cclock, index, count,
         out_bytes, unit, op, num_ops, num_weights, num_units, job_id, node, pr, ir, tr, opsr, opl) = t
        return cls(game_id, Address(ch), Wei(bond), Address(worker), Phase(phase), Side(turn), Outcome(outcome),
                   height, move_no, last, wclock, cclock, index, count, out_bytes, unit, op, num_ops, num_weights,
                   num_units, job_id, bytes(node), bytes(pr), bytes(ir), bytes(tr), bytes(opsr), bytes(opl))

    @property
    def resolved(self) -> bool:
        return self.phase == Phase.RESOLVED

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, bytes):
                v = "0x" + v.hex()
            elif isinstance(v, Phase | Side | Outcome):
                v = v.name.lower()
            out[k] = v
        return out


@dataclass(frozen=True)
class GameOpened:
    game_id: GameId
    job_id: int
    challenger: Address
    worker: Address
    bond: Wei
    num_units: int
    result_root: bytes
    block_number: int


@dataclass(frozen=True)
class GameResolved:
    game_id: GameId
    job_id: int
    outcome: Outcome
    reason: Reason
    burned: Wei
    block_number: int


class DisputeGameClient(_Base):
    """DisputeGame at `address`; `from_block` bounds event scans (the deployment block)."""

    NAME = "DisputeGame"

    def __init__(self, w3, address: str, sender: TxSender | None = None, from_block: int = 0) -> None:
        super().__init__(w3, address, sender)
        self.from_block = from_block
        self._split_bits: int | None = None

    @classmethod
    def with_account(cls, w3, address: str, account, nonces: NonceManager | None = None, from_block: int = 0):
        return cls(w3, address, TxSender(w3, account, nonces or NonceManager(w3)), from_block)

    # ================================================================ reads

    def get_game(self, game_id: int) -> GameState:
        return GameState.from_abi(int(game_id), self._call("getGame", int(game_id)))

    def game_count(self) -> int:
        return self._call("gameCount")

    def split_bits(self) -> int:
        if self._split_bits is None:  # immutable in the contract
            self._split_bits = int(self._call("splitBits"))
        return self._split_bits

    def clock_seconds(self) -> int:
        return self._call("clockSeconds")

    def credits(self, account: str) -> Wei:
        return Wei(self._call("credits", self.w3.to_checksum_address(account)))

    def burned(self) -> Wei:
        return Wei(self._call("burned"))

    def clock_now(self, game_id: int) -> tuple[Side, int, bool]:
        turn, left, expired = self._call("clockNow", int(game_id))
        return Side(turn), left, expired

    def chain_now(self) -> int:
        """Timestamp of the latest block: the time the contract's clocks are measured in."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def _logs(self, event: str, **filters: Any) -> list:
        ev = getattr(self.contract.events, event)  # bounded, adaptive spans (gpumesh.client.chain.events)
        return reverts_decoded(lambda: find_logs(self.w3, ev, filters, self.from_block), f"{event} logs")

    def games_opened(self, job_id: int | None = None, challenger: str | None = None) -> list[GameOpened]:
        """GameOpened events, oldest first, optionally of one job and/or one challenger."""
        f: dict[str, Any] = {}
        if job_id is not None:
            f["jobId"] = int(job_id)
        if challenger is not None:
            f["challenger"] = self.w3.to_checksum_address(challenger)
        return [GameOpened(a["gameId"], a["jobId"], Address(a["challenger"]), Address(a["worker"]), Wei(a["bond"]),
                           a["numUnits"], bytes(a["resultRoot"]), lg["blockNumber"])
                for lg in self._logs("GameOpened", **f) for a in [lg["args"]]]

    def games_of_job(self, job_id: int) -> list[GameId]:
        return [g.game_id for g in self.games_opened(job_id=job_id)]

    def resolutions(self, game_id: int | None = None, job_id: int | None = None) -> list[GameResolved]:
        f: dict[str, Any] = {}
        if game_id is not None:
            f["gameId"] = int(game_id)
        if job_id is not None:
            f["jobId"] = int(job_id)
        return [GameResolved(a["gameId"], a["jobId"], Outcome(a["outcome"]), Reason(a["reason"]), Wei(a["burned"]),
                             lg["blockNumber"]) for lg in self._logs("GameResolved", **f) for a in [lg["args"]]]

    def snapshot(self, game_id: int) -> GameSnapshot:
        """What a player needs to choose its next move (GameSnapshot), from the game and its events."""
        g = self.get_game(game_id)
        if g.phase == Phase.NONE:
            raise ChainError(f"dispute game {game_id} does not exist")
        children: tuple[bytes, ...] = ()
        trace_nodes: dict[tuple[int, int], bytes] = {}
        leaf = b""
        needs_trace = g.phase in (Phase.TRACE_DESCENT, Phase.OP_REVEAL, Phase.TENSOR_DESCENT,
                                  Phase.LEAF_REVEAL, Phase.ONE_STEP)
        needs_children = g.phase.is_descent and g.turn == Side.CHALLENGER
        if needs_trace or needs_children:
            for lg in self._logs("ChildrenRevealed", gameId=int(game_id)):
                a = lg["args"]
                kids = tuple(bytes(c) for c in a["children"])
                if Phase(a["phase"]) == Phase.TRACE_DESCENT:
                    trace_nodes.update(block_nodes(a["height"], a["index"], kids))
                if needs_children and a["moveNo"] == g.move_no - 1:
                    children = kids
            if needs_children and not children:
                raise ChainError(f"game {game_id}: no ChildrenRevealed event for move {g.move_no - 1} "
                                 f"(the RPC node's logs lag its state; retry)")
        if g.phase == Phase.ONE_STEP:
            logs = self._logs("LeafRevealed", gameId=int(game_id))
            if not logs:
                raise ChainError(f"game {game_id}: no LeafRevealed event yet (retry)")
            leaf = bytes(logs[-1]["args"]["leaf"])
        return GameSnapshot(
            game_id=g.game_id, phase=g.phase, turn=g.turn, move_no=g.move_no, height=g.height, index=g.index,
            count=g.count, node=g.node, split_bits=self.split_bits(), now=self.chain_now(),
            last_move_at=g.last_move_at, worker_clock=g.worker_clock, challenger_clock=g.challenger_clock,
            unit_index=g.unit_index, op_index=g.op_index, num_units=g.num_units, num_ops=g.num_ops,
            num_weights=g.num_weights, out_bytes=g.out_bytes, trace_root=g.trace_root, ops_root=g.ops_root,
            program_root=g.program_root, inputs_root=g.inputs_root, children=children, leaf=leaf,
            trace_nodes=trace_nodes,
        )

    # ================================================================ calls (one per entry point)

    def challenge_call(self, job_id: int, bond: int) -> Call:
        return self.tx_call("challenge", int(job_id), value=bond, context=f"challenge(job {job_id})")

    def reveal_call(self, game_id: int, move_no: int, children: Sequence[bytes]) -> Call:
        return self.tx_call("reveal", int(game_id), int(move_no), [bytes(c) for c in children],
                        context=f"reveal(game {game_id}, move {move_no})")

    def pick_call(self, game_id: int, move_no: int, c: int, child: bytes, path: Sequence[bytes]) -> Call:
        return self.tx_call("pick", int(game_id), int(move_no), int(c), bytes(child), [bytes(p) for p in path],
                        context=f"pick(game {game_id}, move {move_no}, child {c})")

    def commit_trace_call(self, game_id: int, move_no: int, trace_root: bytes, num_ops: int, num_weights: int,
                          ops_root: bytes, output_path: Sequence[bytes]) -> Call:
        return self.tx_call("commitTrace", int(game_id), int(move_no), bytes(trace_root), int(num_ops), int(num_weights),
                        bytes(ops_root), [bytes(p) for p in output_path],
                        context=f"commitTrace(game {game_id}, move {move_no})")

    def prove_op_call(self, game_id: int, move_no: int, descriptor: bytes, path: Sequence[bytes]) -> Call:
        return self.tx_call("proveOp", int(game_id), int(move_no), bytes(descriptor), [bytes(p) for p in path],
                        context=f"proveOp(game {game_id}, move {move_no})")

    def reveal_leaf_call(self, game_id: int, move_no: int, leaf: bytes) -> Call:
        return self.tx_call("revealLeaf", int(game_id), int(move_no), bytes(leaf),
                        context=f"revealLeaf(game {game_id}, move {move_no})")

    def step_call(self, game_id: int, move_no: int, descriptor: bytes, element_index: int, leaf: bytes,
                  proofs: bytes) -> Call:
        return self.tx_call("step", int(game_id), int(move_no), bytes(descriptor), int(element_index), bytes(leaf),
                        bytes(proofs), context=f"step(game {game_id}, move {move_no}, element {element_index})")

    def resolve_timeout_call(self, game_id: int) -> Call:
        return self.tx_call("resolveTimeout", int(game_id), context=f"resolveTimeout(game {game_id})")

    def request_data_call(self, job_id: int, unit_index: int, bond: int) -> Call:
        return self.tx_call("requestData", int(job_id), int(unit_index), value=int(bond),
                            context=f"requestData(job {job_id}, unit {unit_index})")

    def answer_data_call(self, game_id: int, move_no: int, data: bytes, unit_path: Sequence[bytes]) -> Call:
        return self.tx_call("answerData", int(game_id), int(move_no), bytes(data), [bytes(p) for p in unit_path],
                            context=f"answerData(game {game_id}, move {move_no}, {len(data)} bytes)")

    def withdraw_call(self) -> Call:
        return self.tx_call("withdraw", context="withdraw(dispute game credits)")

    # ================================================================ writes (build, sign, send, wait)

    def challenge(self, job_id: int, bond: int) -> tuple[GameId, TxResult]:
        res = self.send(self.challenge_call(job_id, bond))
        return GameId(res.event("GameOpened")["gameId"]), res

    def reveal(self, game_id: int, move_no: int, children: Sequence[bytes]) -> TxResult:
        return self.send(self.reveal_call(game_id, move_no, children))

    def pick(self, game_id: int, move_no: int, c: int, child: bytes, path: Sequence[bytes]) -> TxResult:
        return self.send(self.pick_call(game_id, move_no, c, child, path))

    def commit_trace(self, game_id: int, move_no: int, trace_root: bytes, num_ops: int, num_weights: int,
                     ops_root: bytes, output_path: Sequence[bytes]) -> TxResult:
        return self.send(self.commit_trace_call(game_id, move_no, trace_root, num_ops, num_weights, ops_root,
                                                output_path))

    def prove_op(self, game_id: int, move_no: int, descriptor: bytes, path: Sequence[bytes]) -> TxResult:
        return self.send(self.prove_op_call(game_id, move_no, descriptor, path))

    def reveal_leaf(self, game_id: int, move_no: int, leaf: bytes) -> TxResult:
        return self.send(self.reveal_leaf_call(game_id, move_no, leaf))

    def step(self, game_id: int, move_no: int, descriptor: bytes, element_index: int, leaf: bytes,
             proofs: bytes) -> TxResult:
        return self.send(self.step_call(game_id, move_no, descriptor, element_index, leaf, proofs))

    def resolve_timeout(self, game_id: int) -> TxResult:
        return self.send(self.resolve_timeout_call(game_id))

    def request_data(self, job_id: int, unit_index: int, bond: int) -> tuple[GameId, TxResult]:
        res = self.send(self.request_data_call(job_id, unit_index, bond))
        return GameId(res.event("GameOpened")["gameId"]), res

    def answer_data(self, game_id: int, move_no: int, data: bytes, unit_path: Sequence[bytes]) -> TxResult:
        return self.send(self.answer_data_call(game_id, move_no, data, unit_path))

    def served_data(self, job_id: int) -> dict[int, bytes]:
        """Unit outputs the worker put on-chain answering data requests (DataServed), by unit index."""
        return {int(lg["args"]["unitIndex"]): bytes(lg["args"]["data"])
                for lg in self._logs("DataServed", jobId=int(job_id))}

    def withdraw(self) -> tuple[Wei, TxResult]:
        res = self.send(self.withdraw_call())
        return Wei(res.event("Withdrawn")["amount"]), res
