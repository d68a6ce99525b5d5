"""Show 2: when the IPFS data is missing or does not match the posted roots, the worker does not
claim (and logs why), and the poster cancels and gets the reward back. Real anvil, embedded IPFS."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.client.core.program import inputs_root
from gpumesh.client.services.accounts import dev_account
from gpumesh.ipfs.store import MemoryStore
from gpumesh.node.jobs.publish import publish_job

pytestmark = pytest.mark.integration
ETH = 10**18


def _nowhere(data: bytes) -> str:
    """A valid CID of content nobody uploaded to the node."""
    return MemoryStore().add_bytes(data)


CASES = {
    # the chain's inputs root is not the spec's (the poster posted the wrong root)
    "wrong inputs root": lambda s, lie: (s.to_bytes(), s.program_root, lie, "the spec's inputs root"),
    # spec and chain agree, but the data hashes to another root
    "data not matching its root": lambda s, lie: (
        JobSpecDoc(s.program_cid, s.inputs_cid, s.program_root, lie, 17).to_bytes(), s.program_root, lie,
        "weights + inputs hash to inputs root"),
    # the inputs file was never uploaded anywhere
    "missing inputs CID": lambda s, lie: (
        JobSpecDoc(s.program_cid, _nowhere(b"inputs"), s.program_root, s.inputs_root, 17).to_bytes(),
        s.program_root, s.inputs_root, "is not available on IPFS"),
    # the spec document itself is missing
    "missing spec CID": lambda s, lie: (None, s.program_root, s.inputs_root, "job spec"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_worker_does_not_claim_and_poster_is_refunded(env, caplog, case):
    caplog.set_level(logging.INFO, logger="gpumesh")
    store = env.store()
    from tests.integration.worker.conftest import MLP, MLP_INPUTS

    pub = publish_job(store, MLP, MLP_INPUTS)
    s = pub.spec
    other = pub.units[::-1]
    lie = inputs_root(pub.bundle.program, pub.bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in other])
    spec_bytes, pr, ir, why = CASES[case](s, lie)
    spec_cid = store.add_bytes(spec_bytes) if spec_bytes is not None else _nowhere(b"spec")
    reward = ETH // 2
    job_id = env.post_spec(spec_cid, pr, ir, 17, reward=reward)

    env.registry(2).stake(2 * ETH)
    w = env.worker(fetch_attempts=3)
    env.drive(w, lambda: w.node.state.get("job", job_id) is not None
              and w.node.state.get("job", job_id)["status"] == "rejected", max_ticks=20)
    rec = w.node.state.get("job", job_id)
    assert why in rec["reason"] and rec["reason"].startswith(f"not claiming: job {job_id}: ")
    assert f"job {job_id}: rejected: not claiming" in caplog.text
    for _ in range(3):  # and it stays that way
        assert w.daemon.tick_once()
    market = env.market()
    assert market.get_job(job_id).state == JobState.OPEN
    claimed = market.contract.events.JobClaimed().get_logs(argument_filters={"jobId": job_id}, from_block=0)
    assert list(claimed) == []
    assert env.registry().info(dev_account(2).address).locked == 0

    poster = dev_account(1).address
    env.market(1).cancel_job(job_id)
    assert market.get_job(job_id).state == JobState.CANCELLED
    assert market.credits(poster) == reward
    amount, _ = env.market(1).withdraw()
    assert amount == reward and market.credits(poster) == 0
