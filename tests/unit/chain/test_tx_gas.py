"""The gas a transaction asks for: eth_estimateGas x 1.2, capped at the latest block's gas limit
and never under the estimate (a 26.1M-gas step in a 30M block was sent with 31.3M and refused)."""

from types import SimpleNamespace

import pytest

from gpumesh.client.chain.tx import build_tx, gas_limit_for

BLOCK = 30_000_000


@pytest.mark.parametrize(("estimate", "limit", "expected"), [
    (100_000, BLOCK, 120_000),            # the margin where it fits
    (25_000_000, BLOCK, 30_000_000),      # 30M exactly: margin and cap meet
    (26_100_000, BLOCK, BLOCK),           # 31.32M capped at the block
    (29_999_999, BLOCK, BLOCK),
    (BLOCK, BLOCK, BLOCK),                # a whole block: no margin left
    (31_000_000, BLOCK, 31_000_000),      # over the block: the estimate itself (the node will say no)
])
def test_gas_limit_for(estimate, limit, expected):
    assert gas_limit_for(estimate, limit) == expected


class FakeCall:
    def __init__(self, estimate: int) -> None:
        self.estimate = estimate

    def estimate_gas(self, params):
        return self.estimate

    def build_transaction(self, params):
        return dict(params)


def fake_w3(limit: int):
    return SimpleNamespace(eth=SimpleNamespace(chain_id=31337, get_block=lambda which: {"gasLimit": limit}))


def test_build_tx_caps_a_big_step_at_the_block_gas_limit():
    tx = build_tx(fake_w3(BLOCK), FakeCall(26_100_000), "0x" + "11" * 20, nonce=3)
    assert tx["gas"] == BLOCK
    tx = build_tx(fake_w3(BLOCK), FakeCall(50_000), "0x" + "11" * 20, nonce=3)
    assert tx["gas"] == 60_000
    # an explicit gas is left alone
    assert build_tx(fake_w3(BLOCK), FakeCall(50_000), "0x" + "11" * 20, nonce=3, gas=77)["gas"] == 77
