"""What a worker asks its RPC node (issue #15, "RPC efficiency"), counted at its own transport on
anvil: an idle tick (no new block, nothing waiting on the clock) costs one eth_getBlockByNumber
over HTTP and nothing at all over ws:// (newHeads by subscription); a new block costs the head,
one bounded eth_getLogs and nothing else; the chain id is asked once per connection."""

from __future__ import annotations

import time

import pytest

from gpumesh.client.chain.provider import stats_of

pytestmark = pytest.mark.integration
ETH = 10**18


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_idle_ticks_cost_one_request_over_http_and_none_over_websockets(env, scheme):
    env.registry(2).stake(2 * ETH)
    w = env.worker(rpc_url=env.anvil.url.replace("http", scheme))
    assert w.daemon.tick_once()  # start-up: capabilities, the scan of Open jobs
    stats = stats_of(w.node.market.w3)
    before = stats.by_method()
    for _ in range(5):
        assert w.daemon.tick_once()
    idle = {m: n - before.get(m, 0) for m, n in stats.by_method().items() if n != before.get(m, 0)}
    assert idle == ({"eth_getBlockByNumber": 5} if scheme == "http" else {}), idle
    env.anvil.rpc("evm_mine")
    before = stats.by_method()
    for _ in range(10):  # over ws the notification may need a moment: the head is read when it arrives
        time.sleep(0.1)
        assert w.daemon.tick_once()
        if stats.by_method().get("eth_getLogs", 0) > before.get("eth_getLogs", 0):
            break
    new_block = {m: n - before.get(m, 0) for m, n in stats.by_method().items() if n != before.get(m, 0)}
    assert new_block.get("eth_getLogs") == 1, new_block
    assert sum(new_block.values()) <= (4 if scheme == "http" else 3), new_block  # + the outbox's reorg re-check
    assert stats.by_method()["eth_chainId"] == 1
