"""The transport and the transaction path on a real anvil (issue #15, "RPC efficiency"):
- every request is counted and the chain id is asked once per connection, over HTTP and ws://;
- new heads arrive by subscription over ws:// (no request while nothing changes);
- an outage is one readable line;
- a broadcast whose nonce another transaction took ("nonce too low") is not taken as sent: the
  outbox fails that attempt and signs again with a fresh nonce;
- a transaction stuck in the pool is replaced with higher fees and the replacement is mined."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from gpumesh.client.chain.contracts import WorkerRegistryClient, connect
from gpumesh.client.chain.provider import HeadSource, RpcUnavailable, make_web3, stats_of
from gpumesh.client.chain.tx import NonceManager, NonceTaken, TxSender
from gpumesh.client.services.accounts import dev_account
from gpumesh.node.common.outbox import Outbox
from gpumesh.node.common.store import StateStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_requests_are_counted_and_the_chain_id_is_asked_once(chain, scheme):
    anvil, dep, _, _ = chain
    w3 = connect(anvil.url.replace("http", scheme), dep)
    reg = WorkerRegistryClient.with_account(w3, dep.registry, dev_account(2))
    for _ in range(3):
        reg.free_stake(dev_account(2).address)  # eth_call: web3's validation asks the chain id each time
    reg.stake(10**18)  # estimate, build, send, receipt
    st = stats_of(w3).by_method()
    assert st["eth_chainId"] == 1, st
    assert st["eth_call"] >= 3 and st["eth_sendRawTransaction"] == 1
    assert stats_of(w3).total() == sum(st.values())


def test_new_heads_by_subscription_over_websockets(chain):
    anvil, dep, _, _ = chain
    w3 = make_web3(anvil.url.replace("http", "ws"))
    heads = HeadSource(w3)
    assert heads.subscribed
    start = heads.latest()
    before = stats_of(w3).total()
    assert heads.latest() == start and stats_of(w3).total() == before  # idle: no request at all
    anvil.rpc("evm_mine")
    assert heads.latest(wait=2.0) == start + 1
    assert stats_of(w3).total() == before


def test_an_outage_is_one_line(chain):
    w3 = make_web3("http://127.0.0.1:9", timeout=1)
    with pytest.raises(RpcUnavailable) as err:
        _ = w3.eth.block_number
    assert str(err.value) == "RPC at http://127.0.0.1:9 is unreachable (connection refused)"
    assert stats_of(w3).errors == 1


def _outbox(w3, tmp_path, i: int = 2, **kw):
    sender = TxSender(w3, dev_account(i), NonceManager(w3))
    return Outbox(sender, StateStore(tmp_path / "s.sqlite"), **kw), sender


def test_a_nonce_taken_by_another_transaction_is_not_taken_as_sent(chain, tmp_path, caplog):
    """Another process with the same key used nonce n between our nonce read and our broadcast:
    the node answers 'nonce too low'. Our bytes were never mined; the outbox says so and signs
    the intent again with a fresh nonce."""
    anvil, dep, _, w3 = chain
    caplog.set_level(logging.INFO, logger="gpumesh")
    outbox, sender = _outbox(w3, tmp_path)
    me = dev_account(2).address
    stale = sender.nonces.pending(me)
    # the other process: a plain transfer at nonce `stale`, mined at once
    other = TxSender(w3, dev_account(2), NonceManager(w3))
    other.transact(WorkerRegistryClient(w3, dep.registry).contract.functions.stake(), value=1)
    assert sender.nonces.pending(me) == stale + 1
    real = sender.nonces.pending
    reads = [stale]
    sender.nonces.pending = lambda addr: reads.pop() if reads else real(addr)  # our first read is stale
    reg = WorkerRegistryClient(w3, dep.registry, sender)
    res = outbox.send("stake:1", reg.tx_call("stake", value=5))
    first, again = outbox.store.outbox_get("stake:1"), outbox.store.outbox_get("stake:1#1")
    assert first.status == "failed" and "held by another transaction" in first.detail
    assert again.status == "mined" and res.tx_hash == again.tx_hash
    with pytest.raises(NonceTaken):  # the first bytes: never "already sent"
        sender.broadcast(first.raw_tx, "stake:1")
    assert "signing it again with a fresh nonce" in caplog.text


def test_a_stuck_transaction_is_replaced_with_higher_fees(chain, tmp_path, caplog):
    anvil, dep, _, w3 = chain
    caplog.set_level(logging.INFO, logger="gpumesh")
    outbox, sender = _outbox(w3, tmp_path, bump_after=0.5, receipt_timeout=20.0)
    reg = WorkerRegistryClient(w3, dep.registry, sender)
    anvil.rpc("evm_setAutomine", [False])
    try:
        timer = threading.Timer(1.6, lambda: anvil.rpc("evm_mine"))
        timer.start()
        t0 = time.monotonic()
        res = outbox.send("stake:stuck", reg.tx_call("stake", value=7))
        timer.join()
    finally:
        anvil.rpc("evm_setAutomine", [True])
    entry = outbox.store.outbox_get("stake:stuck")
    assert entry.status == "mined" and entry.tx_hash == res.tx_hash
    first_hash = next(r.getMessage() for r in caplog.records if "sending" in r.getMessage()).split("tx ")[1].split(",")[0]
    assert res.tx_hash != first_hash  # a replacement was mined, not the first bytes
    assert "replaced with fees raised by a quarter" in caplog.text and time.monotonic() - t0 >= 1.5
    tx = w3.eth.get_transaction(res.tx_hash)
    first = sender.w3.eth.get_transaction_count(sender.address)  # exactly one of the versions mined
    assert tx["nonce"] == first - 1 and tx["maxPriorityFeePerGas"] > 0
    assert reg.info(sender.address).total >= 7


def test_a_scan_of_many_jobs_is_one_batch_request(chain, clients):
    from gpumesh.client.chain.contracts import JobMarketClient
    from tests.integration.chain.test_lifecycle import _spec

    anvil, dep, _, w3 = chain
    poster = clients["poster"][0]
    ids = [poster.post_job(_spec(w3, spec_cid=f"bafyspec{i}"), 10**17)[0] for i in range(5)]
    fresh = connect(anvil.url, dep)
    before = stats_of(fresh).by_method().get("eth_call", 0)
    jobs = JobMarketClient(fresh, dep.market).jobs(batch=3)
    assert [j.job_id for j in jobs][-5:] == ids
    assert stats_of(fresh).batches == -(-len(jobs) // 3)  # getJob calls travel 3 per request
    assert stats_of(fresh).by_method()["eth_call"] - before == len(jobs) + 1  # + jobCount
    assert jobs[-1] == JobMarketClient(fresh, dep.market).get_job(ids[-1])
