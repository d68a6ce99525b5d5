"""Replacing a stuck transaction (TxSender.bump): the same nonce, recipient, value, data and gas,
fees raised by a quarter (at least to the node's current fees), signed by the same key, for a
dynamic-fee (type 2) and a legacy transaction alike."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from web3 import Web3

from gpumesh.client.chain.tx import TxSender, bump_fee, raw_nonce

KEY = "0x" + "42" * 32
ACCT = Account.from_key(KEY)
TO = Web3.to_checksum_address("0x" + "ab" * 20)
GWEI = 10**9


def _w3(tip: int, base: int, price: int):
    eth = SimpleNamespace(max_priority_fee=tip, chain_id=31337, gas_price=price,
                          get_block=lambda tag: {"baseFeePerGas": base})
    return SimpleNamespace(eth=eth)


def test_bump_fee_is_a_quarter_and_at_least_one_wei():
    assert bump_fee(100) == 125 and bump_fee(3) == 4 and bump_fee(0) == 1 and bump_fee(1) == 2


@pytest.mark.parametrize(("node_tip", "node_base", "want_tip", "want_max"), [
    (1 * GWEI, 1 * GWEI, 5 * GWEI // 4, 25 * GWEI // 4),       # the node is calm: a quarter up
    (9 * GWEI, 40 * GWEI, 9 * GWEI, 89 * GWEI),                  # a fee spike: at least the node's fees
])
def test_a_dynamic_fee_transaction_is_replaced_at_the_same_nonce(node_tip, node_base, want_tip, want_max):
    old = ACCT.sign_transaction({"type": 2, "chainId": 31337, "nonce": 7, "to": TO, "value": 5, "data": b"\x01\x02",
                                 "gas": 90_000, "maxPriorityFeePerGas": GWEI, "maxFeePerGas": 5 * GWEI})
    new = TxSender(_w3(node_tip, node_base, 0), ACCT, None).bump(bytes(old.raw_transaction), "move")
    tx = TypedTransaction.from_bytes(HexBytes(new.raw)).as_dict()
    assert (raw_nonce(new.raw), new.nonce, tx["to"], tx["value"], tx["data"], tx["gas"]) == \
        (7, 7, HexBytes(TO), 5, HexBytes(b"\x01\x02"), 90_000)
    assert (tx["maxPriorityFeePerGas"], tx["maxFeePerGas"]) == (want_tip, want_max)
    assert Account.recover_transaction(new.raw) == ACCT.address
    assert new.tx_hash != "0x" + bytes(old.hash).hex()


def test_a_legacy_transaction_is_replaced_at_the_same_nonce():
    old = ACCT.sign_transaction({"chainId": 31337, "nonce": 3, "to": TO, "value": 0, "data": b"\x09", "gas": 50_000,
                                 "gasPrice": 8 * GWEI})
    new = TxSender(_w3(0, 0, 2 * GWEI), ACCT, None).bump(bytes(old.raw_transaction), "move")
    assert raw_nonce(new.raw) == 3 and new.tx["gasPrice"] == 10 * GWEI and new.tx["gas"] == 50_000
    assert new.tx["to"] == TO and new.tx["data"] == b"\x09"
    assert Account.recover_transaction(new.raw) == ACCT.address
