"""Idempotent transactions for a daemon: each one is named by an intent (`claim:job:7`), and its
SIGNED raw bytes are recorded in the StateStore outbox BEFORE they are broadcast. A daemon killed
between recording and mining re-broadcasts the same bytes on restart (same nonce, same hash), so a
handler that runs twice never sends a second transaction for the same intent.

    sender = OutboxSender(w3, account, nonces, state)
    receipt = sender.send("submit:job:7", market.contract.functions.submitResult(7, root, cid))

Imported by the worker daemon; built by its CLI entry point. Uses the chain adapter's build/sign/
send steps (gpumesh.client.chain.tx); keys stay inside the eth-account object.
"""

from __future__ import annotations

import logging

from gpumesh.client.chain.errors import ReceiptTimeout
from gpumesh.client.chain.tx import build_tx, send_signed, sign_tx, wait_receipt
from gpumesh.client.core.errors import ChainError
from gpumesh.node.common.store import StateStore

log = logging.getLogger("gpumesh.worker.outbox")


class OutboxSender:
    def __init__(self, w3, account, nonces, state: StateStore, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.account = account
        self.nonces = nonces
        self.state = state
        self.receipt_timeout = receipt_timeout

    @property
    def address(self) -> str:
        return self.account.address

    def _live(self, intent: str):
        """The entry that stands for `intent` (retries after a failure are `intent#1`, `#2`...),
        and the name a new attempt would take."""
        name, k = intent, 0
        while (e := self.state.outbox_get(name)) is not None:
            if e.status != "failed":
                return e, name
            k += 1
            name = f"{intent}#{k}"
        return None, name

    def send(self, intent: str, call, value: int = 0):
        """The receipt of the one transaction for `intent`, sending it only if none is recorded.
        After a failed attempt (reverted, dropped) the caller has re-checked the chain and still
        wants it: a new attempt is recorded under the next retry name."""
        entry, name = self._live(intent)
        if entry is not None and entry.status == "mined":
            return self.w3.eth.get_transaction_receipt(entry.tx_hash)
        if entry is not None:
            return self._settle(entry.intent, entry.raw_tx, entry.tx_hash)
        with self.nonces.lock(self.address):
            nonce = self.nonces.pending(self.address)
            tx = build_tx(self.w3, call, self.address, nonce, value=value, context=intent)
            signed = sign_tx(tx, self.account)
            raw, tx_hash = bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()
            self.state.outbox_add(name, raw, tx_hash)  # recorded BEFORE it leaves this process
            log.info("sending %s (tx %s, nonce %d)", name, tx_hash, nonce)
            self._broadcast(name, raw)
        return self._settle(name, raw, tx_hash, tx)

    def _broadcast(self, intent: str, raw: bytes) -> str | None:
        class _Raw:  # send_signed takes a SignedTransaction-like object
            raw_transaction = raw

        try:
            send_signed(self.w3, _Raw, intent)
            return None
        except ChainError as exc:
            # "already known" / "nonce too low" after a restart: the node has (or mined) it, or the
            # nonce went to another tx. The receipt decides.
            log.info("%s: broadcast answered: %s", intent, exc)
            return str(exc)

    def _receipt(self, h: bytes):
        try:
            return self.w3.eth.get_transaction_receipt(h)
        except Exception:  # noqa: BLE001 - web3 raises TransactionNotFound: "not mined yet"
            return None

    def _settle(self, intent: str, raw: bytes, tx_hash: str, tx: dict | None = None):
        h = bytes.fromhex(tx_hash.removeprefix("0x"))
        receipt = self._receipt(h)
        if receipt is None:
            answer = self._broadcast(intent, raw)  # after a restart the node may never have seen it
            if answer is not None and "nonce too low" in answer.lower() and self._receipt(h) is None:
                # Its nonce was used by another transaction: this one can never be mined.
                self.state.outbox_settle(intent, "failed", "dropped (nonce used)")
                raise ChainError(f"{intent}: transaction {tx_hash} was dropped (its nonce was used)")
            try:
                receipt = wait_receipt(self.w3, h, self.receipt_timeout, tx=tx, context=intent)
            except ReceiptTimeout:
                raise  # still pending: the next attempt settles it
            except ChainError as exc:
                self.state.outbox_settle(intent, "failed", str(exc))
                raise
        elif receipt["status"] != 1:
            self.state.outbox_settle(intent, "failed", "reverted")
            wait_receipt(self.w3, h, 1.0, tx=tx, context=intent)  # raises the decoded revert
        self.state.outbox_settle(intent, "mined")
        return receipt

    def flush(self) -> int:
        """Settle every pending entry (after a restart); returns how many were mined now."""
        n = 0
        for e in self.state.outbox_pending():
            try:
                self._settle(e.intent, e.raw_tx, e.tx_hash)
                n += 1
            except ChainError as exc:
                log.warning("outbox %s: %s", e.intent, exc)
        return n
