"""Exactly-once transactions for a daemon: each one is named by an intent (`claim:job:7`,
`game:3:move:12`), and its SIGNED raw bytes are recorded in the StateStore outbox BEFORE they are
broadcast. A daemon killed between recording and mining re-broadcasts the same bytes on restart
(same nonce, same hash), so a handler that runs twice never signs a second transaction for an intent.

    outbox = Outbox(sender, state)                        # one signer (TxSender), one state file
    res = outbox.send("submit:job:7", market.tx_call("submitResult", 7, root, cid))   # -> TxResult
    outbox.flush()                                        # at startup: settle what a past life left

A recorded transaction that can no longer be mined (its nonce went to another one) or that
reverted is marked failed; a later `send` for the same intent (the caller re-read the chain and
still wants it) records a new attempt as `intent#1`, `intent#2`...

Used by the worker daemon (market/registry transactions) and, through the dispute Responder, by
both daemons' game moves. Built by their entry points; nonces come from the TxSender's
NonceManager (gpumesh.client.chain.tx), whose lock is held from choosing the nonce until the
signed bytes are recorded and broadcast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpumesh.client.chain import errors as chain_errors
from gpumesh.client.chain.contracts import TxResult
from gpumesh.client.chain.tx import Call, SignedTx
from gpumesh.client.core.errors import ChainError
from gpumesh.node.common.store import OutboxEntry, StateStore


class OutboxError(ChainError):
    """A recorded transaction can never be mined (dropped: its nonce was used by another one)."""


@dataclass(frozen=True)
class Sent:
    intent: str
    tx_hash: str
    block_number: int
    gas_used: int


class RawSender(Protocol):
    """The raw path of gpumesh.client.chain.tx.TxSender that the outbox needs."""

    address: str

    def sign_and_send(self, call: Call, record: Callable[[SignedTx], None] | None = None) -> SignedTx: ...
    def broadcast(self, raw: bytes, context: str = "") -> None: ...
    def receipt(self, tx_hash: str) -> Any: ...
    def known(self, tx_hash: str) -> bool: ...
    def wait(self, signed: SignedTx | str, timeout: float = 120.0, context: str = "") -> Any: ...
    def confirmed_nonce(self) -> int: ...


def tx_nonce(raw: bytes) -> int:
    """The nonce of a signed raw transaction (typed EIP-2718 or legacy)."""
    import rlp

    if raw and raw[0] < 0x7F:  # typed: type byte, then the RLP list [chainId, nonce, ...]
        return int.from_bytes(rlp.decode(raw[1:])[1] or b"\x00", "big")
    return int.from_bytes(rlp.decode(raw)[0] or b"\x00", "big")


def plain_result(receipt) -> TxResult:
    """A receipt as a TxResult without decoded events (for callers that need only hash and gas)."""
    return TxResult("0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"], receipt["gasUsed"], ())


class Outbox:
    """Intent -> one recorded signed transaction, for one signer. `result_of` turns a receipt into
    the TxResult callers get (a contract client's `result_of` decodes its events)."""

    def __init__(self, sender: RawSender, store: StateStore, *, result_of: Callable[[Any], TxResult] = plain_result,
                 receipt_timeout: float = 120.0, log: logging.Logger | None = None) -> None:
        self.sender = sender
        self.store = store
        self.result_of = result_of
        self.receipt_timeout = receipt_timeout
        self.log = log or logging.getLogger("gpumesh.outbox")

    @property
    def address(self) -> str:
        return self.sender.address

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

    def send(self, intent: str, call: Call) -> TxResult:
        """The mined result of the one transaction for `intent`, signing it only if none is recorded
        (a revert at the gas estimate raises before anything is recorded)."""
        entry, name = self.live(intent)
        if entry is not None:
            return self.settle(entry)

        def record(st: SignedTx) -> None:
            self.store.outbox_add(name, st.raw, st.tx_hash)
            self.log.info("%s: sending %s (tx %s, nonce %d)", name, call.context, st.tx_hash, st.nonce)

        st = self.sender.sign_and_send(call, record)
        return self.settle(self.store.outbox_get(name), st)

    def settle(self, e: OutboxEntry, st: SignedTx | None = None) -> TxResult:
        """Wait for a recorded transaction; mark it mined or failed. Returns its TxResult."""
        if e.status == "mined":
            rc = self.sender.receipt(e.tx_hash)
            if rc is not None:
                return self.result_of(rc)
        if self.sender.receipt(e.tx_hash) is None:
            # After a restart the node may never have seen it: the same bytes again.
            self.sender.broadcast(e.raw_tx, e.intent)
            if not self.sender.known(e.tx_hash) and self.sender.confirmed_nonce() > tx_nonce(e.raw_tx):
                self.store.outbox_settle(e.intent, "failed", "dropped: its nonce was used by another tx")
                raise OutboxError(f"{e.intent}: transaction {e.tx_hash} was dropped (nonce used)")
        try:
            rc = self.sender.wait(st or e.tx_hash, self.receipt_timeout, context=e.intent)
        except chain_errors.ReceiptTimeout:
            raise  # still pending: the next tick settles it
        except ChainError as exc:
            self.store.outbox_settle(e.intent, "failed", str(exc)[:500])
            raise
        res = self.result_of(rc)
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
