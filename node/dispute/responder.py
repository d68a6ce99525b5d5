"""The effectful half of a dispute player: turns the pure strategies' actions (gpumesh.node.dispute.
strategy) into DisputeGame transactions, exactly once each.

    responder = Responder(game_client, state_store)          # worker or watchtower, one signer
    acted = responder.play(game_id, Side.CHALLENGER, data, prover)   # call every tick
    responder.finished(game_id)                               # resolved and paid out?

Exactly once: every transaction is named by an intent (`game:{id}:move:{moveNo}`,
`game:{id}:timeout`, `game:{id}:close`, `game:{id}:withdraw`) and goes through the daemons' common
outbox (gpumesh.node.common.outbox): its SIGNED bytes are recorded in the StateStore before they
are broadcast. A player killed anywhere re-broadcasts the
recorded bytes on restart (same nonce, same hash) instead of signing a second move; and the game
itself refuses a repeated move number (DisputeGame_StaleMove), so two processes sharing a key
cannot land one move twice either.

Used by the watchtower (challenger side) and the worker (worker side); both inject the client and
the store. Imports the chain adapter (client) and the pure strategies; never torch or IPFS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gpumesh.client.chain import errors as chain_errors
from gpumesh.client.chain.dispute import DisputeGameClient
from gpumesh.client.chain.tx import Call
from gpumesh.client.core.errors import ChainError
from gpumesh.client.core.game import Outcome, Phase, Side
from gpumesh.node.common.outbox import Outbox, Sent
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute import actions as A
from gpumesh.node.dispute.strategy import PlayerData, StepProver, challenger_move, worker_move

#: Reverts that only mean "the game moved on since we read it" (the other side moved, someone
#: resolved it): read the game again next tick rather than treat them as failures.
_RACES = ("DisputeGame_StaleMove", "DisputeGame_NotYourTurn", "DisputeGame_WrongPhase",
          "DisputeGame_ClockRunning", "DisputeGame_NothingToWithdraw", "DisputeGame_NotSlashed")


def action_call(client: DisputeGameClient, action: A.Action) -> Call:
    """The contract call of a strategy action."""
    match action:
        case A.Reveal(g, m, kids):
            return client.reveal_call(g, m, kids)
        case A.Pick(g, m, c, child, path):
            return client.pick_call(g, m, c, child, path)
        case A.CommitTrace(g, m, root, n, w, ops, path):
            return client.commit_trace_call(g, m, root, n, w, ops, path)
        case A.ProveOp(g, m, d, path):
            return client.prove_op_call(g, m, d, path)
        case A.RevealLeaf(g, m, leaf):
            return client.reveal_leaf_call(g, m, leaf)
        case A.Step(g, m, d, e, leaf, proofs):
            return client.step_call(g, m, d, e, leaf, proofs)
        case A.ResolveTimeout(g):
            return client.resolve_timeout_call(g)
        case A.AnswerData(g, m, data, path):
            return client.answer_data_call(g, m, data, path)
    raise TypeError(f"not a dispute action: {action!r}")


def action_intent(action: A.Action) -> str:
    if isinstance(action, A.ResolveTimeout):
        return f"game:{action.game_id}:timeout"
    return f"game:{action.game_id}:move:{action.move_no}"


class Responder:
    """Plays one side of dispute games with one signer. Stateless apart from the store: any
    number of restarts, and calls for games in any order, are safe."""

    def __init__(self, client: DisputeGameClient, store: StateStore, *,
                 receipt_timeout: float = 60.0, log: logging.Logger | None = None,
                 on_sent: Callable[[Sent], None] | None = None) -> None:
        self.client = client
        self.store = store
        self.log = log or logging.getLogger("gpumesh.dispute.responder")
        self.outbox = Outbox(client.sender, store, result_of=client.result_of, receipt_timeout=receipt_timeout,
                             log=self.log)
        self.on_sent = on_sent

    # ---------------------------------------------------------------- public
    def play(self, game_id: int, side: Side, data: PlayerData, prover: StepProver | None = None) -> bool:
        """One look at game `game_id`: make `side`'s move if it is its turn, resolve the other
        side's timeout, or (once resolved) withdraw the credits. Games play to their end also on a
        job another game slashed: the earliest game the worker lost is the one paid (4.11). True when a transaction was sent (or a recorded one settled) by this call."""
        if side == Side.CHALLENGER and prover is None:
            raise ValueError("the challenger side needs a StepProver")
        g = self.client.get_game(game_id)
        if g.phase == Phase.RESOLVED:
            return self._withdraw(game_id)
        if g.phase == Phase.NONE:
            raise ChainError(f"dispute game {game_id} does not exist")
        snap = self.client.snapshot(game_id)
        if snap.phase == Phase.RESOLVED:  # resolved between the two reads
            return self._withdraw(game_id)
        action = worker_move(snap, data) if side == Side.WORKER else challenger_move(snap, data, prover)
        if action is None:
            return False
        return self._send(action_intent(action), action_call(self.client, action))

    def collect(self, game_id: int) -> bool:
        """Withdraw our credits once game `game_id` is resolved; True when a withdrawal was mined."""
        if self.client.get_game(game_id).phase != Phase.RESOLVED:
            return False
        return self._withdraw(game_id)

    def finished(self, game_id: int) -> bool:
        """Resolved, and our credits from it withdrawn (or there were none)."""
        g = self.client.get_game(game_id)
        if g.phase != Phase.RESOLVED:
            return False
        return self.outbox.done(f"game:{game_id}:withdraw") or self.client.credits(self.client.account_address) == 0

    def outcome(self, game_id: int) -> Outcome:
        return self.client.get_game(game_id).outcome

    # ---------------------------------------------------------------- internals
    def _withdraw(self, game_id: int) -> bool:
        intent = f"game:{game_id}:withdraw"
        entry, _ = self.outbox.live(intent)
        if entry is not None and entry.status == "mined":
            return False
        if entry is None and self.client.credits(self.client.account_address) == 0:
            return False  # nothing to collect (we lost, or another game's withdraw took it all)
        return self._send(intent, self.client.withdraw_call())

    def _send(self, intent: str, call: Call) -> bool:
        try:
            res = self.outbox.send(intent, call)
        except chain_errors.ContractRevert as exc:
            if getattr(exc, "error_name", "") in _RACES:
                self.log.info("%s: the game moved on (%s); re-reading next time", intent, exc.error_name)
                return False
            raise
        sent = Sent(intent, res.tx_hash, res.block_number, res.gas_used)
        self.log.info("%s: mined in block %d (gas %d)", intent, res.block_number, res.gas_used)
        if self.on_sent is not None:
            self.on_sent(sent)
        return True
