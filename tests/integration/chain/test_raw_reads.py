"""The hot read paths that bypass web3's middleware (gpumesh.client.chain.contracts `_read`,
`get_jobs`; gpumesh.client.chain.tx `fetch_receipt`) answer exactly what web3's own path answers,
on a real anvil: getJob (struct, checksummed addresses), a batch of them, a scalar view, a revert
decoded to its custom error, and a mined receipt with its decoded events."""

from __future__ import annotations

import pytest

from gpumesh.client.chain import errors
from gpumesh.client.chain.tx import fetch_receipt
from gpumesh.client.chain.types import Job

from .test_lifecycle import ETH, REWARD, _spec

pytestmark = pytest.mark.integration


def test_raw_reads_answer_what_web3_answers(chain, clients):
    _, _, _, w3 = chain
    pm, _, _ = clients["poster"]
    wm, wr, worker = clients["worker"]
    wr.stake(3 * ETH)
    ids = [pm.post_job(_spec(w3), REWARD)[0] for _ in range(3)]
    res = wm.claim_job(ids[1])
    for jid in ids:
        web3_job = Job.from_abi(jid, pm.contract.functions.getJob(jid).call())
        assert pm.get_job(jid) == web3_job
    assert pm.get_jobs(ids) == {jid: pm.get_job(jid) for jid in ids}
    assert pm.get_jobs(ids)[ids[1]].worker == worker  # checksummed, as the account's address
    assert wr.free_stake(worker) == wr.contract.functions.freeStake(worker).call() == ETH
    assert pm.credits(worker) == pm.contract.functions.credits(worker).call()
    # a revert through the raw path is the same decoded exception as through web3's
    with pytest.raises(errors.ContractRevert) as raw_exc:
        wm._read("getJob", 999)
    with pytest.raises(errors.ContractRevert) as web3_exc:
        wm._call("getJob", 999)
    assert type(raw_exc.value) is type(web3_exc.value)
    # receipts: the formatted receipt equals web3's, events decode the same; an unknown hash is None
    raw = fetch_receipt(w3, res.tx_hash)
    assert dict(raw) == dict(w3.eth.get_transaction_receipt(res.tx_hash))
    assert wm.result_of(raw) == res
    assert fetch_receipt(w3, "0x" + "ab" * 32) is None
