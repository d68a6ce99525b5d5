"""Moving ETH: a plain transfer between accounts (any chain) and topping up an account on the
devnet (anvil's `anvil_setBalance`, refused on any other chain). The CLI's `account send` and
`devnet fund` are thin over these."""

from __future__ import annotations

from dataclasses import dataclass

from gpumesh.client.core.errors import AccountError, ClientError, UsageError
from gpumesh.client.core.settings import DEVNET_CHAIN_ID

TRANSFER_GAS = 21_000  # a plain ETH transfer to an account without code


@dataclass(frozen=True)
class Transfer:
    tx_hash: str
    block_number: int
    gas_used: int


def max_fee(w3) -> int:
    """The max fee per gas web3 would set: twice the latest base fee plus the priority fee."""
    base = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
    return 2 * base + int(w3.eth.max_priority_fee)


def checked_address(w3, text: str, what: str) -> str:
    if not w3.is_address(text):
        raise UsageError(f"{what} {text}: not an address (0x + 40 hex) or account name")
    return w3.to_checksum_address(text)


def send_eth(w3, account, to: str, amount: int, timeout: float = 120.0) -> Transfer:
    """Send `amount` wei from the unlocked `account` to `to`, after checking that the balance covers
    it and the gas; waits for the receipt."""
    from gpumesh.client.chain.types import format_eth

    if amount <= 0:
        raise UsageError("--amount: must be more than 0")
    fee, prio = max_fee(w3), int(w3.eth.max_priority_fee)
    have, need = int(w3.eth.get_balance(account.address)), amount + TRANSFER_GAS * fee
    if have < need:
        raise AccountError(f"{account.address} holds {format_eth(have)}, but sending {format_eth(amount)} needs up to "
                           f"{format_eth(need)} with gas; {format_eth(need - have)} missing")
    tx = {"to": to, "value": amount, "gas": TRANSFER_GAS, "maxFeePerGas": fee, "maxPriorityFeePerGas": prio,
          "nonce": w3.eth.get_transaction_count(account.address, "pending"), "chainId": w3.eth.chain_id, "type": 2}
    try:
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except Exception as exc:  # noqa: BLE001 - node refusals and timeouts: one line
        raise ClientError(f"sending {format_eth(amount)} to {to}: {getattr(exc, 'message', None) or exc}") from None
    if receipt["status"] != 1:
        raise ClientError(f"sending {format_eth(amount)} to {to}: transaction 0x{bytes(tx_hash).hex()} failed")
    return Transfer("0x" + bytes(tx_hash).hex(), receipt["blockNumber"], receipt["gasUsed"])


def fund_on_devnet(w3, address: str, amount: int) -> int:
    """Add `amount` wei to `address` on the local devnet (anvil, or Hardhat's node); returns the new balance."""
    if amount <= 0:
        raise UsageError("--amount: must be more than 0")
    if w3.eth.chain_id != DEVNET_CHAIN_ID:
        raise ClientError(f"devnet fund works on the devnet only (chain {DEVNET_CHAIN_ID}), this RPC serves chain "
                          f"{w3.eth.chain_id}: use `gpumesh account send` from a funded account")
    new = int(w3.eth.get_balance(address)) + amount
    why = ""
    # anvil's method first (the devnet's node), then Hardhat's node's name for the same call
    for method in ("anvil_setBalance", "hardhat_setBalance"):
        try:
            resp = w3.provider.make_request(method, [address, hex(new)])
        except Exception as exc:  # noqa: BLE001
            why = f"{method} ({type(exc).__name__})"
            continue
        if isinstance(resp, dict) and resp.get("error"):
            why = f"{method}: {resp['error'].get('message', resp['error'])}"
            continue
        return int(w3.eth.get_balance(address))
    raise ClientError(f"the devnet node refused {why}")
