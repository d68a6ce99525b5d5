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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpumesh.client.chain import errors as chain_errors
from gpumesh.client.chain.contracts import TxResult
from gpumesh.client.chain.provider import Head
from gpumesh.client.chain.tx import Call, NonceTaken, SignedTx, raw_nonce
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


tx_nonce = raw_nonce  # the nonce of signed raw bytes (gpumesh.client.chain.tx)

#: A transaction not mined after this many seconds is replaced with fees raised by a quarter
#: (gpumesh.client.chain.tx.TxSender.bump), again every BUMP_AFTER seconds until the receipt
#: timeout: a game move stuck under a fee spike would otherwise lose its side the game on time.
BUMP_AFTER = 30.0

#: Reorg re-check (Outbox.recheck): transactions mined in this many blocks below the head are
#: checked for a receipt on every full tick of a daemon (the EventReader's default reorg depth),
#: among the newest REORG_RECHECK mined ones.
REORG_BLOCKS = 12
REORG_RECHECK = 64


def mined_block(e: OutboxEntry) -> int | None:
    """The block a mined entry was recorded in (settle writes 'block N gas G'), or None."""
    parts = (e.detail or "").split()
    return int(parts[1]) if len(parts) >= 2 and parts[0] == "block" and parts[1].isdigit() else None

#: Signing again with a fresh nonce after a broadcast found the nonce held by another transaction.
NONCE_ATTEMPTS = 3


def plain_result(receipt) -> TxResult:
    """A receipt as a TxResult without decoded events (for callers that need only hash and gas)."""
    return TxResult("0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"], receipt["gasUsed"], ())


class Outbox:
    """Intent -> one recorded signed transaction, for one signer. `result_of` turns a receipt into
    the TxResult callers get (a contract client's `result_of` decodes its events)."""

    def __init__(self, sender: RawSender, store: StateStore, *, result_of: Callable[[Any], TxResult] = plain_result,
                 receipt_timeout: float = 120.0, bump_after: float | None = BUMP_AFTER,
                 log: logging.Logger | None = None) -> None:
        self.sender = sender
        self.store = store
        self.result_of = result_of
        self.receipt_timeout = receipt_timeout
        self.bump_after = bump_after  # seconds unmined before the fees are raised (None: never)
        self.log = log or logging.getLogger("gpumesh.outbox")
        self._seen: Head | None = None  # the head of the last reorg re-check (recheck's `top`)
        self._fresh: dict[str, tuple[int, str]] = {}  # intents settled mined since then: (block, its hash)

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
        (a revert at the gas estimate raises before anything is recorded). A broadcast that finds
        its nonce held by another transaction (not ours: checked by hash) fails that attempt and
        signs again with a fresh nonce, up to NONCE_ATTEMPTS times."""
        entry, name = self.live(intent)
        if entry is not None:
            return self.settle(entry)
        for _ in range(NONCE_ATTEMPTS):
            def record(st: SignedTx, name: str = name) -> None:
                self.store.outbox_add(name, st.raw, st.tx_hash)
                self.log.info("%s: sending %s (tx %s, nonce %d)", name, call.context, st.tx_hash, st.nonce)

            try:
                st = self.sender.sign_and_send(call, record)
            except NonceTaken as exc:
                self.store.outbox_settle(name, "failed", str(exc)[:500])
                self.log.warning("%s; signing it again with a fresh nonce", exc)
                _, name = self.live(intent)
                continue
            return self.settle(self.store.outbox_get(name), st)
        raise OutboxError(f"{intent}: {NONCE_ATTEMPTS} nonces in a row were taken by other transactions "
                          f"(is this key used by another process?)")

    def settle(self, e: OutboxEntry, st: SignedTx | None = None) -> TxResult:
        """Wait for a recorded transaction; mark it mined or failed. Returns its TxResult. `st`:
        the bytes were broadcast just now (nothing to re-send)."""
        if e.status == "mined":
            rc = self.sender.receipt(e.tx_hash)
            if rc is not None:
                return self.result_of(rc)
        if st is None and self.sender.receipt(e.tx_hash) is None:
            # After a restart (or a timed-out wait) the node may never have seen it: the same bytes again.
            try:
                self.sender.broadcast(e.raw_tx, e.intent)
            except NonceTaken as exc:
                self.store.outbox_settle(e.intent, "failed", f"dropped: {exc}"[:500])
                raise OutboxError(f"{e.intent}: transaction {e.tx_hash} was dropped (nonce used by another)") from None
            if not self.sender.known(e.tx_hash) and self.sender.confirmed_nonce() > tx_nonce(e.raw_tx):
                self.store.outbox_settle(e.intent, "failed", "dropped: its nonce was used by another tx")
                raise OutboxError(f"{e.intent}: transaction {e.tx_hash} was dropped (nonce used)")
        try:
            rc = self._wait(e, st)
        except chain_errors.ReceiptTimeout:
            raise  # still pending: the next tick settles it
        except ChainError as exc:
            self.store.outbox_settle(e.intent, "failed", str(exc)[:500])
            raise
        res = self.result_of(rc)
        self.store.outbox_settle(e.intent, "mined", f"block {res.block_number} gas {res.gas_used}")
        block_hash = rc.get("blockHash") if hasattr(rc, "get") else None
        self._fresh[e.intent] = (int(res.block_number), "0x" + bytes(block_hash).hex() if block_hash else "")
        return res

    def _wait(self, e: OutboxEntry, st: SignedTx | None):
        """The receipt of `e` (or of a replacement of it), raising the fees every `bump_after` s."""
        bump = getattr(self.sender, "bump", None)
        if self.bump_after is None or bump is None or self.bump_after >= self.receipt_timeout:
            return self.sender.wait(st or e.tx_hash, self.receipt_timeout, context=e.intent)
        end = time.monotonic() + self.receipt_timeout
        current: SignedTx | str = st or e.tx_hash
        versions, raw = [e.tx_hash], e.raw_tx
        while True:
            try:
                return self.sender.wait(current, min(self.bump_after, max(0.0, end - time.monotonic())),
                                        context=e.intent)
            except chain_errors.ReceiptTimeout:
                if time.monotonic() >= end:
                    raise
            for h in versions[:-1]:  # an earlier version may have been mined instead
                if self.sender.receipt(h) is not None:
                    self.store.outbox_replace(e.intent, raw, h)
                    return self.sender.wait(h, self.receipt_timeout, context=e.intent)
            new = bump(raw, e.intent)
            self.store.outbox_replace(e.intent, new.raw, new.tx_hash)  # recorded before it is sent
            try:
                self.sender.broadcast(new.raw, e.intent)
            except NonceTaken:  # the previous version was mined meanwhile: find it above
                self.store.outbox_replace(e.intent, raw, versions[-1])
                continue
            self.log.warning("%s: not mined after %.0fs; replaced with fees raised by a quarter (tx %s)",
                             e.intent, self.bump_after, new.tx_hash)
            versions.append(new.tx_hash)
            raw, current = new.raw, new

    def recheck(self, head: int, blocks: int = REORG_BLOCKS, top: Head | None = None) -> int:
        """Re-send what a reorg undid: every transaction marked mined in the last `blocks` blocks
        below `head` whose receipt the node no longer has (its block was replaced) is pending again
        and its recorded bytes are broadcast once more, lowest nonce first, so the chain's
        rolled-back nonces line up again. Returns how many were re-sent. A nonce meanwhile taken by
        another transaction fails that entry (its intent signs anew when its handler still wants
        it). Costs one receipt request per transaction of those last blocks, none when idle.

        With `top` (the head `head` comes from) the check is cheaper when no reorg happened: the
        block hashes chain each block to the one before, so if the head re-checked last time is
        still in the chain (`top` is its child, or the node still has its hash at that height: one
        request), every block up to it is unchanged and only the transactions mined above it, or
        settled since that re-check, are asked about: one receipt request per transaction, once."""
        recent = [e for e in self.store.outbox_recent("mined", REORG_RECHECK)
                  if (b := mined_block(e)) is None or b > head - blocks]
        seen = self._seen
        if top is not None and seen is not None and recent and self._still_in_chain(seen, top):
            recent = [e for e in recent if self._to_ask(e, seen, top)]
        gone = [e for e in recent if self.sender.receipt(e.tx_hash) is None]
        resent = 0
        for e in sorted(gone, key=lambda e: tx_nonce(e.raw_tx)):
            self.store.outbox_settle(e.intent, "pending", "re-sent after a reorg removed its block")
            try:
                self.sender.broadcast(e.raw_tx, e.intent)
            except NonceTaken as exc:
                self.store.outbox_settle(e.intent, "failed", f"reorged out, nonce taken: {exc}"[:500])
                continue
            resent += 1
            self.log.warning("%s: its block was removed by a reorg; sent again (tx %s)", e.intent, e.tx_hash)
        self._fresh.clear()
        self._seen = top
        return resent

    def _to_ask(self, e: OutboxEntry, seen: Head, top: Head) -> bool:
        """Whether `e`'s receipt must be asked for, the chain up to `seen` being unchanged: not when
        it was mined at or below `seen` before that re-check, nor when the block its receipt named
        is `top`, `top`'s parent or `seen` (the same hash at that height)."""
        b = mined_block(e)
        if b is None:
            return True
        fresh = self._fresh.get(e.intent)
        if fresh is not None and fresh[1]:
            n, h = fresh
            if (n, h) in ((top.number, top.hash), (top.number - 1, top.parent_hash), (seen.number, seen.hash)):
                return False
        return fresh is not None or b > seen.number

    def _still_in_chain(self, seen: Head, top: Head) -> bool:
        """Whether block `seen` is still the chain's block at its height, as cheaply as known: free
        when `top` is it or its child, one request for an older one, False when it cannot be told."""
        if (top.number, top.hash) == (seen.number, seen.hash):
            return True
        if top.number == seen.number + 1 and top.parent_hash:
            return top.parent_hash == seen.hash
        block_hash = getattr(self.sender, "block_hash", None)
        if top.number <= seen.number or block_hash is None:
            return False
        return block_hash(seen.number) == seen.hash

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
