"""The effectful half of a dispute player: turns the pure strategies' actions (gpumesh.node.dispute.
strategy) into DisputeGame transactions, exactly once each.

    responder = Responder(game_client, state_store)          # worker or watchtower, one signer
    acted = responder.play(game_id, Side.CHALLENGER, data, prover)   # call every tick
    responder.finished(game_id)                               # resolved and paid out?

Exactly once: every transaction is named by an intent (`game:{id}:move:{moveNo}`,
`game:{id}:timeout`, `game:{id}:close`, `game:{id}:withdraw`) and its SIGNED bytes are recorded in
the StateStore outbox before they are broadcast. A player killed anywhere re-broadcasts the
recorded bytes on restart (same nonce, same hash) instead of signing a second move; and the game
itself refuses a repeated move number (DisputeGame_StaleMove), so two processes sharing a key
cannot land one move twice either.

Used by the watchtower (challenger side) and the worker (worker side); both inject the client and
the store. Imports the chain adapter (client) and the pure strategies; never torch or IPFS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from gpumesh.client.chain import errors as chain_errors
from gpumesh.client.chain.dispute import Call, DisputeGameClient, SignedTx
from gpumesh.client.core.errors import ChainError
from gpumesh.client.core.game import Outcome, Phase, Side
from gpumesh.node.common.store import OutboxEntry, StateStore
from gpumesh.node.dispute import actions as A
from gpumesh.node.dispute.strategy import PlayerData, StepProver, challenger_move, worker_move

#: Reverts that only mean "the game moved on since we read it" (the other side moved, someone
#: resolved it): read the game again next tick rather than treat them as failures.
_RACES = ("DisputeGame_StaleMove", "DisputeGame_NotYourTurn", "DisputeGame_WrongPhase",
          "DisputeGame_ClockRunning", "DisputeGame_NothingToWithdraw", "DisputeGame_NotSlashed")


class ResponderError(ChainError):
    """A recorded transaction of a game failed for a reason other than a race."""


@dataclass(frozen=True)
class Sent:
    intent: str
    tx_hash: str
    block_number: int
    gas_used: int


def tx_nonce(raw: bytes) -> int:
    """The nonce of a signed raw transaction (typed EIP-2718 or legacy)."""
    import rlp

    if raw and raw[0] < 0x7F:  # typed: type byte, then the RLP list [chainId, nonce, ...]
        return int.from_bytes(rlp.decode(raw[1:])[1] or b"\x00", "big")
    return int.from_bytes(rlp.decode(raw)[0] or b"\x00", "big")


class TxOutbox:
    """Intent -> one recorded signed transaction, for one DisputeGameClient signer.

    `send(intent, call)` returns the mined TxResult, recording the signed bytes first; a second
    call for an intent already recorded never signs again: it re-broadcasts and waits. A recorded
    transaction that can no longer be mined (its nonce went to another one) or that reverted is
    marked failed; a later `send` for the same intent (after the caller re-read the chain and
    still wants it) records a new attempt as `intent#1`, `intent#2`...
    """

    def __init__(self, client: DisputeGameClient, store: StateStore, receipt_timeout: float = 60.0,
                 log: logging.Logger | None = None) -> None:
        self.client = client
        self.store = store
        self.receipt_timeout = receipt_timeout
        self.log = log or logging.getLogger("gpumesh.dispute.outbox")

    def live(self, intent: str) -> tuple[OutboxEntry | None, str]:
        """The entry standing for `intent` (skipping failed attempts) and the name of a new attempt."""
        name, k = intent, 0
        while (e := self.store.outbox_get(name)) is not None:
            if e.status != "failed":
                return e, name
            k += 1
            name = f"{intent}#{k}"
        return None, name

    def done(self, intent: str) -> bool:
        e, _ = self.live(intent)
        return e is not None and e.status == "mined"

    def send(self, intent: str, call: Call):
        entry, name = self.live(intent)
        if entry is not None:
            return self.settle(entry)

        def record(st: SignedTx) -> None:
            self.store.outbox_add(name, st.raw, st.tx_hash)
            self.log.info("%s: sending %s (tx %s, nonce %d)", name, call.context, st.tx_hash, st.nonce)

        st = self.client.sign_and_send(call, record)
        return self.settle(self.store.outbox_get(name), st)

    def settle(self, e: OutboxEntry, st: SignedTx | None = None):
        """Wait for a recorded transaction; mark it mined or failed. Returns its TxResult."""
        if e.status == "mined":
            rc = self.client.receipt(e.tx_hash)
            if rc is not None:
                return self.client.result_of(rc)
        if self.client.receipt(e.tx_hash) is None:
            # After a restart the node may never have seen it: the same bytes again.
            self.client.broadcast(e.raw_tx, e.intent)
            if not self.client.known(e.tx_hash) and self.client.confirmed_nonce() > tx_nonce(e.raw_tx):
                self.store.outbox_settle(e.intent, "failed", "dropped: its nonce was used by another tx")
                raise ResponderError(f"{e.intent}: transaction {e.tx_hash} was dropped (nonce used)")
        try:
            res = self.client.wait(st or e.tx_hash, self.receipt_timeout, context=e.intent)
        except chain_errors.ReceiptTimeout:
            raise  # still pending: the next tick settles it
        except ChainError as exc:
            self.store.outbox_settle(e.intent, "failed", str(exc)[:500])
            raise
        self.store.outbox_settle(e.intent, "mined", f"block {res.block_number} gas {res.gas_used}")
        return res

    def flush(self) -> list[Sent]:
        """Settle every pending entry of this store (after a restart); returns those mined now."""
        done = []
        for e in self.store.outbox_pending():
            try:
                res = self.settle(e)
                done.append(Sent(e.intent, res.tx_hash, res.block_number, res.gas_used))
            except ChainError as exc:
                self.log.warning("outbox %s: %s", e.intent, exc)
        return done


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
    raise TypeError(f"not a dispute action: {action!r}")


def action_intent(action: A.Action) -> str:
    if isinstance(action, A.ResolveTimeout):
        return f"game:{action.game_id}:timeout"
    return f"game:{action.game_id}:move:{action.move_no}"


class Responder:
    """Plays one side of dispute games with one signer. Stateless apart from the store: any
    number of restarts, and calls for games in any order, are safe."""

    def __init__(self, client: DisputeGameClient, store: StateStore, *, is_slashed: Callable[[int], bool] | None = None,
                 receipt_timeout: float = 60.0, log: logging.Logger | None = None,
                 on_sent: Callable[[Sent], None] | None = None) -> None:
        self.client = client
        self.store = store
        self.is_slashed = is_slashed  # market.is_slashed: close a game whose job another game slashed
        self.log = log or logging.getLogger("gpumesh.dispute.responder")
        self.outbox = TxOutbox(client, store, receipt_timeout, self.log)
        self.on_sent = on_sent

    # ---------------------------------------------------------------- public
    def play(self, game_id: int, side: Side, data: PlayerData, prover: StepProver | None = None) -> bool:
        """One look at game `game_id`: make `side`'s move if it is its turn, resolve the other
        side's timeout, close the game if its job was already slashed, or (once resolved) withdraw
        the credits. True when a transaction was sent (or a recorded one settled) by this call."""
        if side == Side.CHALLENGER and prover is None:
            raise ValueError("the challenger side needs a StepProver")
        g = self.client.get_game(game_id)
        if g.phase == Phase.RESOLVED:
            return self._withdraw(game_id)
        if g.phase == Phase.NONE:
            raise ChainError(f"dispute game {game_id} does not exist")
        if self.is_slashed is not None and self.is_slashed(g.job_id):
            # Another game already slashed the job: nothing is left to prove; the bond comes back.
            return self._send(f"game:{game_id}:close", self.client.close_slashed_call(game_id))
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
