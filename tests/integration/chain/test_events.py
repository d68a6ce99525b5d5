"""EventReader on a real anvil: confirmations, resuming from the stored cursor without duplicates,
and a reorg (evm_snapshot / evm_revert, then different blocks) delivering the replacement events."""

from __future__ import annotations

import pytest

from gpumesh.client.chain.events import EventReader, JsonCursorStore, MemoryCursorStore
from tests.chain_node import mine

from .test_lifecycle import REWARD, _spec

pytestmark = pytest.mark.integration


def _reader(w3, clients, store, **kw):
    market, registry = clients["poster"][0], clients["poster"][1]
    return EventReader(w3, [market.contract, registry.contract], store, **kw)


def test_confirmations_and_resume_from_stored_cursor(chain, clients, tmp_path):
    anvil, dep, _, w3 = chain
    pm = clients["poster"][0]
    store = JsonCursorStore(tmp_path / "cursor.json")
    r = _reader(w3, clients, store, start_block=dep.deploy_block, confirmations=2)
    pm.post_job(_spec(w3), REWARD)
    assert r.poll() == []  # the JobPosted block has no confirmations yet
    mine(anvil, 2)
    evs = r.poll()
    assert [e.name for e in evs] == ["JobPosted"] and evs[0].args["jobId"] == 1
    r.commit()

    # a new reader on the same file (a restarted daemon) sees only what is new
    clients["worker"][1].stake(10**18)
    pm.post_job(_spec(w3), REWARD)
    mine(anvil, 2)
    r2 = _reader(w3, clients, JsonCursorStore(tmp_path / "cursor.json"), start_block=dep.deploy_block,
                 confirmations=2)
    evs = r2.poll()
    assert [(e.name, e.address) for e in evs] == [("Staked", dep.registry), ("JobPosted", dep.market)]
    assert evs[1].args["jobId"] == 2
    r2.commit()
    assert r2.poll() == []


def test_uncommitted_events_are_redelivered_after_a_restart(chain, clients):
    _, dep, _, w3 = chain
    store = MemoryCursorStore()
    clients["poster"][0].post_job(_spec(w3), REWARD)
    assert len(_reader(w3, clients, store, start_block=dep.deploy_block).poll()) == 1  # no commit: "crash"
    assert len(_reader(w3, clients, store, start_block=dep.deploy_block).poll()) == 1


def test_reorg_delivers_replacement_events_once(chain, clients):
    anvil, dep, _, w3 = chain
    pm = clients["poster"][0]
    store = MemoryCursorStore()
    r = _reader(w3, clients, store, start_block=dep.deploy_block, confirmations=0, reorg_depth=8)
    mine(anvil, 1)
    r.poll()
    r.commit()
    snap = anvil.rpc("evm_snapshot")
    pm.post_job(_spec(w3, spec_cid="bafy-first"), REWARD)
    first = r.poll()
    r.commit()
    assert [e.args["specCid"] for e in first] == ["bafy-first"]
    # reorg: drop that block and build a different one at the same height
    assert anvil.rpc("evm_revert", [snap]) is True
    mine(anvil, 1)
    pm.post_job(_spec(w3, spec_cid="bafy-second"), REWARD)
    evs = r.poll()
    r.commit()
    assert r.reorgs_seen == 1
    assert [e.args["specCid"] for e in evs] == ["bafy-second"]
    assert evs[0].block_hash != first[0].block_hash
    assert r.poll() == []  # nothing delivered twice


@pytest.mark.parametrize("tag", ["safe", "finalized"])
def test_a_block_tag_as_confirmations(chain, clients, tag):
    """On a chain with finality, events are delivered once their block is at the tag (anvil reports
    its own 'safe'/'finalized' block); nothing past it, and everything up to it."""
    anvil, dep, _, w3 = chain
    pm = clients["poster"][0]
    r = _reader(w3, clients, MemoryCursorStore(), start_block=dep.deploy_block, confirmations=tag)
    pm.post_job(_spec(w3), REWARD)
    mine(anvil, 80)  # anvil's finalized block trails the head by a few dozen blocks
    last = w3.eth.get_block(tag)["number"]
    evs = r.poll()
    assert r.last_block() == last and all(e.block_number <= last for e in evs)
    posted = [e for e in evs if e.name == "JobPosted"]
    assert len(posted) == 1
    with pytest.raises(ValueError, match="safe"):
        _reader(w3, clients, MemoryCursorStore(), confirmations="latest")
