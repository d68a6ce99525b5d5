"""Transactions in three separate steps: build (with nonce and gas estimate), sign (offline, with an
eth-account LocalAccount), send; plus receipt waiting with a timeout. Reverts at any step surface as
the decoded custom-error exception (gpumesh.client.chain.errors). Imported by the contract wrappers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gpumesh.client.chain.errors import ReceiptTimeout, TransactionFailed, UnknownRevert, decode_revert
from gpumesh.client.core.errors import ChainError

T = TypeVar("T")

#: Safety margin on eth_estimateGas (state can move between estimate and inclusion).
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 6, 5


def _revert_data(exc: BaseException) -> bytes | str | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str | bytes) and data:
        return data
    return None


def reverts_decoded(fn: Callable[[], T], context: str) -> T:
    """Run an eth_call/estimate/send and turn contract reverts into our exceptions."""
    from web3.exceptions import ContractLogicError, Web3RPCError

    try:
        return fn()
    except ContractLogicError as exc:
        data = _revert_data(exc)
        if data is not None:
            raise decode_revert(data, context) from None
        raise UnknownRevert(f"{context}: {exc}") from None
    except Web3RPCError as exc:
        raise ChainError(f"{context}: the node refused: {getattr(exc, 'message', None) or exc}") from None
    except (ConnectionError, OSError) as exc:
        raise ChainError(f"{context}: the RPC endpoint is unreachable ({type(exc).__name__})") from None


class NonceManager:
    """Nonces per sender from the node's pending count (which includes our unmined transactions),
    with a per-address lock held from choosing the nonce until the node has the signed transaction,
    so concurrent sends from this process never reuse or skip a nonce. No local counter: after a
    reorg or a devnet revert the chain's count is the truth, and a stale local one would leave a
    gap that no block ever fills."""

    def __init__(self, w3) -> None:
        self._w3 = w3
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, address: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    def pending(self, address: str) -> int:
        return self._w3.eth.get_transaction_count(address, "pending")


def build_tx(w3, call, sender: str, nonce: int, value: int = 0, gas: int | None = None, context: str = "") -> dict:
    """A complete unsigned transaction for contract function `call` (a web3 ContractFunction).
    Estimating gas runs the call, so a revert is reported here, before anything is signed."""
    params: dict[str, Any] = {"from": sender, "value": int(value), "nonce": nonce, "chainId": w3.eth.chain_id}
    if gas is None:
        est = reverts_decoded(lambda: call.estimate_gas({"from": sender, "value": int(value)}), context)
        gas = est * GAS_MARGIN_NUM // GAS_MARGIN_DEN
    params["gas"] = gas
    return reverts_decoded(lambda: call.build_transaction(params), context)


def sign_tx(tx: dict, account) -> Any:
    """Sign offline with an eth-account LocalAccount; returns its SignedTransaction."""
    return account.sign_transaction(tx)


def send_signed(w3, signed, context: str = "") -> bytes:
    """Broadcast a signed transaction; returns its hash."""
    return bytes(reverts_decoded(lambda: w3.eth.send_raw_transaction(signed.raw_transaction), context))


def wait_receipt(w3, tx_hash: bytes, timeout: float = 120.0, tx: dict | None = None, context: str = ""):
    """Wait for the receipt; a reverted transaction raises its decoded error (replayed with eth_call
    on the state before its block when `tx` is given)."""
    from web3.exceptions import TimeExhausted

    try:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except TimeExhausted:
        raise ReceiptTimeout(f"{context}: no receipt for 0x{tx_hash.hex()} after {timeout:.0f}s") from None
    if receipt["status"] == 1:
        return receipt
    if tx is not None:
        replay = {k: tx[k] for k in ("from", "to", "value", "data") if k in tx}
        block = max(receipt["blockNumber"] - 1, 0)
        reverts_decoded(lambda: w3.eth.call(replay, block_identifier=block), context)
    raise TransactionFailed(f"{context}: transaction 0x{tx_hash.hex()} reverted")


@dataclass
class TxSender:
    """One signer bound to one chain: build -> sign -> send -> wait, with its own nonces."""

    w3: Any
    account: Any  # eth_account LocalAccount (never printed)
    nonces: NonceManager
    receipt_timeout: float = 120.0

    @property
    def address(self) -> str:
        return self.account.address

    def transact(self, call, value: int = 0, context: str = ""):
        with self.nonces.lock(self.address):
            nonce = self.nonces.pending(self.address)
            tx = build_tx(self.w3, call, self.address, nonce, value=value, context=context)
            signed = sign_tx(tx, self.account)
            tx_hash = send_signed(self.w3, signed, context)
        return wait_receipt(self.w3, tx_hash, self.receipt_timeout, tx=tx, context=context)
