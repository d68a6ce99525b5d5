"""Transactions in three separate steps: build (with nonce and gas estimate), sign (offline, with an
eth-account LocalAccount), send; plus receipt waiting with a timeout. Reverts at any step surface as
the decoded custom-error exception (gpumesh.client.chain.errors). Imported by the contract wrappers.

`TxSender` also exposes the raw path the daemons' outbox (gpumesh.node.common.outbox) is built on:
`sign_and_send(call, record)` hands the SIGNED bytes to `record` before broadcasting them, and
`broadcast` / `receipt` / `known` / `confirmed_nonce` / `wait` settle recorded bytes later.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

from gpumesh.client.chain.errors import ReceiptTimeout, TransactionFailed, UnknownRevert, decode_revert
from gpumesh.client.core.errors import ChainError

T = TypeVar("T")


class NonceTaken(ChainError):
    """Signed bytes whose nonce another transaction holds (mined or pooled): they can never be mined."""


def keccak(data: bytes) -> bytes:
    from eth_utils import keccak as _keccak

    return _keccak(data)


def raw_nonce(raw: bytes) -> int:
    """The nonce of a signed raw transaction (typed EIP-2718 or legacy)."""
    import rlp

    if raw and raw[0] < 0x7F:  # typed: type byte, then the RLP list [chainId, nonce, ...]
        return int.from_bytes(rlp.decode(raw[1:])[1] or b"\x00", "big")
    return int.from_bytes(rlp.decode(raw)[0] or b"\x00", "big")

#: Node answers that mean "this exact transaction is already in the pool" on re-broadcast.
_ALREADY_SENT = ("already known", "known transaction", "already imported")
#: Node answers that mean "a transaction with this nonce is mined or pooled": ours (mined since we
#: last looked) or ANOTHER one (sent from the same key elsewhere, or a replacement). Which of the
#: two is told by asking for our own hash, never assumed.
_NONCE_HELD = ("nonce too low", "replacement transaction underpriced", "replacement underpriced",
               "nonce has already been used", "already used")

#: Safety margin on eth_estimateGas (state can move between estimate and inclusion).
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 6, 5


def gas_limit_for(estimate: int, block_gas_limit: int) -> int:
    """The gas a transaction asks for: the estimate plus the margin, but never more than a block holds
    (a node refuses a transaction over the block gas limit, so a 26.1M step of a 30M block would
    fail with 31.3M) and never less than the estimate itself."""
    return max(estimate, min(estimate * GAS_MARGIN_NUM // GAS_MARGIN_DEN, block_gas_limit))


def revert_data(exc: BaseException) -> bytes | str | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str | bytes) and data:
        return data
    return None


def rpc_error(error: Any, context: str) -> ChainError:
    """The exception for a JSON-RPC error object of a call or estimate sent through the provider,
    as `reverts_decoded` makes it from web3's: revert data decoded to its custom error, a revert
    without data an UnknownRevert, anything else "the node refused"."""
    err = error if isinstance(error, dict) else {"message": str(error)}
    data = revert_data(SimpleNamespace(data=err.get("data")))
    message = str(err.get("message", ""))
    if data is not None and data not in ("0x", b""):
        return decode_revert(data, context)
    if "revert" in message.lower():
        return UnknownRevert(f"{context}: {message}")
    return ChainError(f"{context}: the node refused: {message}")


def reverts_decoded(fn: Callable[[], T], context: str) -> T:
    """Run an eth_call/estimate/send and turn contract reverts into our exceptions."""
    from web3.exceptions import ContractLogicError, Web3RPCError

    try:
        return fn()
    except ChainError:
        raise  # already one line (an RPC outage from gpumesh.client.chain.provider)
    except ContractLogicError as exc:
        data = revert_data(exc)
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
        gas = gas_limit_for(est, int(w3.eth.get_block("latest")["gasLimit"]))
    params["gas"] = gas
    return reverts_decoded(lambda: call.build_transaction(params), context)


def sign_tx(tx: dict, account) -> Any:
    """Sign offline with an eth-account LocalAccount; returns its SignedTransaction."""
    return account.sign_transaction(tx)


def send_signed(w3, signed, context: str = "") -> bytes:
    """Broadcast a signed transaction; returns its hash."""
    return bytes(reverts_decoded(lambda: w3.eth.send_raw_transaction(signed.raw_transaction), context))


#: Receipt polling: first look at once (automining devnets), then 0.2, 0.5 and 1 s after the
#: send, then one look per second: a 1-second-block chain costs ~3 looks per transaction (the
#: bench_market measure was 6.5 with looks at 0, 0, 0.05, 0.15, 0.35, 0.75 s) for at most 0.3 s more
#: latency; the next block cannot come sooner than it comes.
RECEIPT_POLLS = (0.2, 0.3, 0.5)
RECEIPT_POLL_MAX = 1.0


def fetch_receipt(w3, tx_hash: bytes | str):
    """The receipt of `tx_hash` as web3's get_transaction_receipt answers it, or None while it is
    not mined: one eth_getTransactionReceipt through the provider, so the null answer of every
    look while a transaction waits costs no web3 middleware (a third of a look's CPU), and a
    receipt goes through web3's own receipt formatter."""
    from web3.exceptions import TransactionNotFound

    h = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
    make_request = getattr(getattr(w3, "provider", None), "make_request", None)
    resp = make_request("eth_getTransactionReceipt", [h]) if make_request is not None else None
    if isinstance(resp, dict) and "error" not in resp and "result" in resp:
        if resp["result"] is None:
            return None
        try:
            from web3._utils.method_formatters import receipt_formatter
            from web3.datastructures import AttributeDict

            return AttributeDict.recursive(receipt_formatter(resp["result"]))
        except Exception:  # noqa: BLE001 - web3's internals moved: its public path below
            pass
    try:
        return w3.eth.get_transaction_receipt(h)
    except TransactionNotFound:
        return None


def poll_receipt(w3, tx_hash: bytes, timeout: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
    """The receipt of `tx_hash`, looking again after growing pauses; None after `timeout` seconds."""
    end = clock() + timeout
    next_head = getattr(getattr(w3, "provider", None), "wait_for_head", None)  # newHeads over ws://
    for k in itertools.count():
        if (receipt := fetch_receipt(w3, tx_hash)) is not None:
            return receipt
        if clock() >= end:
            return None
        # with a head subscription, look again when a block arrives (at most a second apart);
        # otherwise after growing pauses
        if next_head is not None and next_head(min(RECEIPT_POLL_MAX, end - clock())):
            continue
        pause = RECEIPT_POLLS[k] if k < len(RECEIPT_POLLS) else RECEIPT_POLL_MAX
        if clock() + pause > end:
            return None
        sleep(pause)
    return None


def wait_receipt(w3, tx_hash: bytes, timeout: float = 120.0, tx: dict | None = None, context: str = ""):
    """Wait for the receipt; a reverted transaction raises its decoded error (replayed with eth_call
    on the state before its block, then after it, when `tx` is given)."""
    receipt = poll_receipt(w3, tx_hash, timeout)
    if receipt is None:
        raise ReceiptTimeout(f"{context}: no receipt for 0x{tx_hash.hex()} after {timeout:.0f}s")
    if receipt["status"] == 1:
        return receipt
    if tx is not None:
        replay = {k: tx[k] for k in ("from", "to", "value", "data") if k in tx}
        # On the state before its block first (a transaction that reverts on its own). A race lost
        # to a transaction earlier in the same block (two claims of one job) passes there: the state
        # after the block, which holds the winner's effect, gives the reason (JobMarket_WrongState).
        n = int(receipt["blockNumber"])
        for block in (max(n - 1, 0), n):
            reverts_decoded(lambda block=block: w3.eth.call(replay, block_identifier=block), context)
    raise TransactionFailed(f"{context}: transaction 0x{tx_hash.hex()} reverted")


#: A replacement raises fees by this fraction (nodes refuse one under +10%).
BUMP_NUM, BUMP_DEN = 5, 4


def bump_fee(fee: int) -> int:
    """`fee` raised by a quarter, rounded up, and by at least 1 wei."""
    return max(fee + 1, -(-int(fee) * BUMP_NUM // BUMP_DEN))


@dataclass(frozen=True)
class Call:
    """One contract call ready to become a transaction: the web3 ContractFunction, the value sent,
    and a short description for error messages (`reveal(game 3, move 7)`)."""

    fn: Any
    value: int
    context: str


@dataclass(frozen=True)
class SignedTx:
    raw: bytes
    tx_hash: str  # 0x-hex
    nonce: int
    tx: dict  # the unsigned fields (to replay a revert for its reason)


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
        """Send contract function `call` and wait: its receipt (a revert raises its decoded error)."""
        st = self.sign_and_send(Call(call, int(value), context))
        return self.wait(st, self.receipt_timeout, context)

    # ---------------------------------------------------------------- the raw path (outbox first)
    def sign_and_send(self, call: Call, record: Callable[[SignedTx], None] | None = None) -> SignedTx:
        """Build (gas estimate: a revert surfaces here, before anything is signed), sign, hand the
        signed bytes to `record` (the outbox write, if any), then broadcast. The nonce lock is held from
        choosing the nonce until the node has the transaction, so a recorded tx never shares its
        nonce with another send of this process."""
        with self.nonces.lock(self.address):
            tx = self._prepare(call)
            nonce = int(tx["nonce"])
            signed = sign_tx(tx, self.account)
            st = SignedTx(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), nonce, tx)
            if record is None:
                send_signed(self.w3, signed, call.context)  # a fresh send: any refusal is an error
            else:
                record(st)
                self.broadcast(st.raw, call.context)  # recorded bytes: "already known" is fine
        return st

    def _prepare(self, call: Call) -> dict:
        """The complete unsigned transaction of `call`, as build_tx makes it: the nonce from the
        NonceManager, then ONE JSON-RPC batch (the gas estimate, the latest block's gas limit and
        base fee, the priority fee) instead of four requests through web3's middleware. A revert
        at the estimate raises its decoded error here, before anything is signed. A node without
        batches or without EIP-1559 fees gets build_tx's path."""
        nonce = self.nonces.pending(self.address)
        make_batch = getattr(getattr(self.w3, "provider", None), "make_batch_request", None)
        fn = call.fn
        if make_batch is not None and getattr(fn, "address", None):
            try:
                data = fn._encode_transaction_data()
            except AttributeError:  # not a web3 ContractFunction
                data = None
            if data is not None:
                probe = {"from": self.address, "to": fn.address, "value": hex(int(call.value)), "data": data}
                try:
                    answers = make_batch([("eth_estimateGas", [probe]),
                                          ("eth_getBlockByNumber", ["latest", False]),
                                          ("eth_maxPriorityFeePerGas", [])])
                except NotImplementedError:
                    answers = None
                if isinstance(answers, list) and len(answers) == 3 and all(isinstance(a, dict) for a in answers):
                    estimate, block, tip = answers
                    if "error" in estimate:
                        raise rpc_error(estimate["error"], call.context)
                    if not any("error" in a for a in answers) and (block.get("result") or {}).get("baseFeePerGas"):
                        block = block["result"]
                        tip_wei = int(tip["result"], 16)
                        return {"from": self.address, "to": fn.address, "value": int(call.value), "data": data,
                                "nonce": nonce, "chainId": int(self.w3.eth.chain_id),
                                "gas": gas_limit_for(int(estimate["result"], 16), int(block["gasLimit"], 16)),
                                "maxPriorityFeePerGas": tip_wei,
                                "maxFeePerGas": tip_wei + 2 * int(block["baseFeePerGas"], 16)}
        return build_tx(self.w3, call.fn, self.address, nonce, value=call.value, context=call.context)

    def broadcast(self, raw: bytes, context: str = "") -> None:
        """Send signed bytes; a node that already has them (or mined them) is not an error. A node
        that holds ANOTHER transaction at their nonce raises NonceTaken: the bytes will never be
        mined, and the caller signs again with a fresh nonce."""
        from web3.exceptions import Web3RPCError

        try:
            self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            msg = str(getattr(exc, "message", None) or exc).lower()
            if any(m in msg for m in _ALREADY_SENT):
                return
            if any(m in msg for m in _NONCE_HELD):
                tx_hash = "0x" + keccak(raw).hex()
                if self.known(tx_hash):
                    return  # it is ours that holds the nonce (mined or pooled)
                raise NonceTaken(f"{context}: nonce {raw_nonce(raw)} is held by another transaction ({msg})",
                                 nonce=raw_nonce(raw)) from None
            raise ChainError(f"{context}: the node refused the transaction: {msg}") from None
        except ChainError:
            raise
        except (ConnectionError, OSError) as exc:
            raise ChainError(f"{context}: the RPC endpoint is unreachable ({type(exc).__name__})") from None

    def bump(self, raw: bytes, context: str = "") -> SignedTx:
        """The same transaction (same nonce, to, value, data, gas) with fees raised by a quarter, at
        least to the node's current ones, signed (not sent): it replaces `raw` in the pool (nodes
        ask for a 10% rise) when a transaction is stuck under a fee spike while a dispute clock runs."""
        from eth_account.typed_transactions import TypedTransaction

        if raw and raw[0] < 0x7F:
            from hexbytes import HexBytes

            old = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            if int(old.get("type", 2)) != 2:
                raise ChainError(f"{context}: cannot raise the fees of a type-{old.get('type')} transaction")
            tx = {k: old[k] for k in ("chainId", "nonce", "to", "value", "data", "gas", "accessList")}
            tip = max(bump_fee(old["maxPriorityFeePerGas"]), int(self.w3.eth.max_priority_fee))
            base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
            tx.update(type=2, maxPriorityFeePerGas=tip, maxFeePerGas=max(bump_fee(old["maxFeePerGas"]), 2 * base + tip))
        else:
            import rlp
            from eth_utils import to_checksum_address

            nonce, price, gas, to, value, data = rlp.decode(raw)[:6]
            tx = {"nonce": int.from_bytes(nonce or b"\x00", "big"), "gas": int.from_bytes(gas, "big"),
                  "to": to_checksum_address(to), "value": int.from_bytes(value or b"\x00", "big"), "data": data,
                  "chainId": int(self.w3.eth.chain_id),
                  "gasPrice": max(bump_fee(int.from_bytes(price or b"\x00", "big")), int(self.w3.eth.gas_price))}
        signed = sign_tx(tx, self.account)
        return SignedTx(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), tx["nonce"], tx)

    def receipt(self, tx_hash: str):
        """The receipt of `tx_hash`, or None while it is not mined."""
        return fetch_receipt(self.w3, tx_hash)

    def known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (pending or mined)."""
        from web3.exceptions import TransactionNotFound

        try:
            return self.w3.eth.get_transaction(tx_hash) is not None
        except TransactionNotFound:
            return False

    def wait(self, signed: SignedTx | str, timeout: float = 120.0, context: str = ""):
        """The receipt of a sent transaction; a revert raises its decoded error (replayed for its
        reason when the unsigned fields are at hand)."""
        tx_hash = signed.tx_hash if isinstance(signed, SignedTx) else signed
        tx = signed.tx if isinstance(signed, SignedTx) else None
        return wait_receipt(self.w3, bytes.fromhex(tx_hash.removeprefix("0x")), timeout, tx=tx, context=context)

    def block_hash(self, number: int) -> str | None:
        """The 0x-hex hash of the chain's block at height `number` now, or None (no such block)."""
        from web3.exceptions import BlockNotFound

        try:
            block = self.w3.eth.get_block(int(number))
        except BlockNotFound:
            return None
        return "0x" + bytes(block["hash"]).hex()

    def confirmed_nonce(self) -> int:
        """Transactions of our account mined so far (a recorded tx with a lower nonce and no receipt
        was replaced or dropped and will never be mined)."""
        return self.w3.eth.get_transaction_count(self.address, "latest")
