"""The job lifecycle on a real anvil through the Python adapter, and every custom error that can
be provoked surfacing as its Python exception."""

from __future__ import annotations

import pytest

from gpumesh.client.chain import errors
from gpumesh.client.chain.tx import build_tx, reverts_decoded, sign_tx, wait_receipt
from gpumesh.client.chain.types import JobSpec, JobState
from tests.chain_node import dev_method

from .conftest import UNBONDING

pytestmark = pytest.mark.integration

ETH = 10**18
REWARD, STAKE, BOND = ETH // 2, 2 * ETH, ETH // 10
EXEC, WINDOW = 600, 3600


def _spec(w3, **kw):
    now = w3.eth.get_block("latest")["timestamp"]
    base = dict(spec_cid="bafyspec", program_root=b"\x01" * 32, inputs_root=b"\x02" * 32, num_units=3,
                required_stake=STAKE, claim_deadline=now + 3600, execution_time=EXEC, challenge_window=WINDOW,
                min_gpu_memory_mib=4096, dispute_bond=BOND)
    base.update(kw)
    return JobSpec(**base)


def _balance(w3, addr):
    return w3.eth.get_balance(addr)


def test_full_lifecycle_stake_post_claim_submit_finalize_withdraw(chain, clients):
    anvil, dep, _, w3 = chain
    pm, _, poster = clients["poster"]
    wm, wr, worker = clients["worker"]

    res = wr.stake(3 * ETH)
    assert res.event("Staked")["totalStake"] == 3 * ETH
    job_id, res = pm.post_job(_spec(w3), REWARD)
    assert job_id == 1
    posted = res.event("JobPosted")
    assert posted["specCid"] == "bafyspec" and posted["minGpuMemoryMiB"] == 4096 and posted["reward"] == REWARD
    assert w3.eth.get_balance(dep.market) == REWARD

    wm.claim_job(job_id)
    job = pm.get_job(job_id)
    assert job.state is JobState.CLAIMED and job.worker == worker
    assert wr.info(worker).locked == STAKE and wr.free_stake(worker) == ETH

    wm.submit_result(job_id, b"\x03" * 32, "bafyoutputs")
    job = pm.get_job(job_id)
    assert job.state is JobState.SUBMITTED and job.result_root == b"\x03" * 32

    with pytest.raises(errors.error_class("JobMarket_ChallengeWindowOpen")):
        pm.finalize_job(job_id)
    anvil.increase_time(WINDOW)
    clients["other"][0].finalize_job(job_id)  # anyone may finalize
    assert pm.get_job(job_id).state is JobState.FINALIZED
    assert wm.credits(worker) == REWARD
    assert wr.info(worker).locked == 0

    before = _balance(w3, worker)
    amount, res = wm.withdraw()
    assert amount == REWARD
    receipt = w3.eth.get_transaction_receipt(res.tx_hash)
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert _balance(w3, worker) == before + REWARD - fee
    assert w3.eth.get_balance(dep.market) == 0

    # unstake after the unbonding delay
    wr.request_unstake(3 * ETH)
    with pytest.raises(errors.error_class("WorkerRegistry_NothingToWithdraw")) as ei:
        wr.withdraw()
    assert ei.value.unbonding == 3 * ETH
    anvil.increase_time(UNBONDING)
    amount, _ = wr.withdraw()
    assert amount == 3 * ETH
    assert w3.eth.get_balance(dep.registry) == 0


def test_cancel_refunds_poster(chain, clients):
    _, _, _, w3 = chain
    pm, _, poster = clients["poster"]
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    with pytest.raises(errors.error_class("JobMarket_NotPoster")) as ei:
        clients["other"][0].cancel_job(job_id)
    assert ei.value.poster == poster
    pm.cancel_job(job_id)
    assert pm.get_job(job_id).state is JobState.CANCELLED
    assert pm.withdraw()[0] == REWARD


def anvil_now(w3) -> int:
    return w3.eth.get_block("latest")["timestamp"]


def test_expire_claimed_job_refunds_and_slashes(chain, clients):
    anvil, dep, _, w3 = chain
    pm, pr, poster = clients["poster"]
    wm, wr, worker = clients["worker"]
    wr.stake(STAKE)
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    wm.claim_job(job_id)
    with pytest.raises(errors.error_class("JobMarket_NotExpired")):
        pm.expire_job(job_id)
    anvil.increase_time(EXEC + 1)
    with pytest.raises(errors.error_class("JobMarket_ExecutionDeadlinePassed")):
        wm.submit_result(job_id, b"\x03" * 32, "late")
    # inside the poster's claim window the job re-opens for another worker (the same burn)
    res = clients["other"][0].expire_job(job_id)
    assert res.event("JobReopened")["slashed"] == STAKE // 10
    job = pm.get_job(job_id)
    assert job.state is JobState.OPEN and job.deadline == job.claim_deadline
    assert wr.info(worker).total == STAKE - STAKE // 10 and wr.info(worker).locked == 0
    # claimed again by the same slow worker, late again, now past the claim deadline: it ends
    wr.stake(STAKE // 10)  # back to a full stake
    wm.claim_job(job_id)
    anvil.increase_time(max(EXEC, job.claim_deadline - anvil_now(w3)) + 1)
    res = clients["other"][0].expire_job(job_id)
    assert res.event("JobExpired")["slashed"] == STAKE // 10
    assert pm.get_job(job_id).state is JobState.EXPIRED
    # 10% of the stake slashed, all of it burned: the poster gets its reward back and nothing more
    assert pr.info(poster).credits == 0
    burned = 2 * (STAKE // 10)
    assert wr.info(worker).total == STAKE + STAKE // 10 - burned
    assert pr.total_burned() == burned
    assert pm.withdraw()[0] == REWARD


def test_expire_unclaimed_job(chain, clients):
    anvil, _, _, w3 = chain
    pm, _, _ = clients["poster"]
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    anvil.increase_time(3601)
    with pytest.raises(errors.error_class("JobMarket_ClaimDeadlinePassed")):
        clients["worker"][0].claim_job(job_id)
    clients["other"][0].expire_job(job_id)
    assert pm.get_job(job_id).state is JobState.EXPIRED
    assert pm.credits(pm.sender.address) == REWARD


def test_reverts_surface_as_their_exceptions(chain, clients):
    _, dep, _, w3 = chain
    pm, pr, poster = clients["poster"]
    wm, wr, worker = clients["worker"]
    E = errors.error_class

    with pytest.raises(E("JobMarket_UnknownJob")) as ei:
        pm.get_job(42)
    assert ei.value.jobId == 42 and str(ei.value).endswith("job 42 does not exist")
    with pytest.raises(E("JobMarket_InvalidReward")):
        pm.post_job(_spec(w3), 0)
    with pytest.raises(E("JobMarket_InvalidSpec")) as ei:
        pm.post_job(_spec(w3, num_units=0), REWARD)
    assert ei.value.field == "numUnits"
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    with pytest.raises(E("WorkerRegistry_InsufficientFreeStake")) as ei:
        wm.claim_job(job_id)
    assert (ei.value.worker, ei.value.free, ei.value.needed) == (worker, 0, STAKE)
    wr.stake(STAKE)
    with pytest.raises(E("JobMarket_WrongState")):
        wm.submit_result(job_id, b"\x03" * 32, "x")
    wm.claim_job(job_id)
    with pytest.raises(E("JobMarket_NotWorker")):
        clients["other"][0].submit_result(job_id, b"\x03" * 32, "x")
    with pytest.raises(E("JobMarket_ZeroResultRoot")):
        wm.submit_result(job_id, b"\x00" * 32, "x")
    with pytest.raises(E("JobMarket_NothingToWithdraw")):
        clients["other"][0].withdraw()
    with pytest.raises(E("WorkerRegistry_ZeroAmount")):
        wr.stake(0)
    with pytest.raises(E("WorkerRegistry_InsufficientFreeStake")):
        wr.request_unstake(1)
    # market-only and game-only entry points, called by a plain account
    with pytest.raises(E("WorkerRegistry_NotMarket")):
        wr._transact("lock", worker, 1)
    with pytest.raises(E("JobMarket_NotDisputeGame")):
        wm._transact("onChallengeOpened", job_id)


def test_a_mined_revert_is_decoded_from_its_receipt(chain, clients):
    """Skip the estimate (explicit gas) so the revert happens on-chain; wait_receipt replays it."""
    _, _, _, w3 = chain
    pm, _, _ = clients["poster"]
    acct = pm.sender.account
    call = pm.contract.functions.cancelJob(99)
    tx = build_tx(w3, call, acct.address, w3.eth.get_transaction_count(acct.address), gas=100_000)
    tx_hash = w3.eth.send_raw_transaction(sign_tx(tx, acct).raw_transaction)
    with pytest.raises(errors.error_class("JobMarket_UnknownJob")):
        wait_receipt(w3, bytes(tx_hash), tx=tx, context="cancelJob(99)")
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 0


def _impersonate(anvil, w3, address, fund=10 * ETH):
    anvil.rpc(dev_method(anvil, "anvil_impersonateAccount"), [address])
    anvil.rpc(dev_method(anvil, "anvil_setBalance"), [address, hex(fund)])


def test_game_hook_errors_via_the_predicted_game_address(chain, clients):
    """anvil impersonates the game contract to call the hooks with inputs a real game never sends."""
    anvil, dep, _, w3 = chain
    pm, _, _ = clients["poster"]
    wm, wr, _ = clients["worker"]
    game = dep.dispute_game
    _impersonate(anvil, w3, game)
    wr.stake(STAKE)
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    wm.claim_job(job_id)
    wm.submit_result(job_id, b"\x03" * 32, "out")
    hooks = pm.contract.functions
    E = errors.error_class
    with pytest.raises(E("JobMarket_NoOpenDispute")):
        reverts_decoded(lambda: hooks.onChallengeResolved(job_id, 1, game, True).transact({"from": game}), "resolve")
    hooks.onChallengeOpened(job_id).transact({"from": game})
    anvil.increase_time(WINDOW)
    with pytest.raises(E("JobMarket_DisputesOpen")):
        pm.finalize_job(job_id)
    with pytest.raises(E("JobMarket_ChallengeWindowClosed")):
        reverts_decoded(lambda: hooks.onChallengeOpened(job_id).transact({"from": game}), "open")
    challenger = clients["challenger"][2]
    tx = hooks.onChallengeResolved(job_id, 1, challenger, True).transact({"from": game})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1, "the resolving hook reverted"
    assert pm.is_slashed(job_id)
    assert clients["challenger"][1].info(challenger).credits == STAKE // 2  # half paid, half burned


def test_transfer_failed_and_amount_too_large(chain, clients):
    anvil, dep, _, w3 = chain
    pm, pr, _ = clients["poster"]
    E = errors.error_class
    rejecter = "0x" + "42" * 20
    anvil.rpc(dev_method(anvil, "anvil_setCode"), [rejecter, "0x60006000fd"])  # PUSH1 0 PUSH1 0 REVERT: refuses ETH
    _impersonate(anvil, w3, rejecter, fund=2**97)
    f = pm.contract.functions
    f.postJob(_spec(w3).as_tuple()).transact({"from": rejecter, "value": REWARD})
    f.cancelJob(1).transact({"from": rejecter})
    with pytest.raises(E("JobMarket_TransferFailed")) as ei:
        reverts_decoded(lambda: f.withdraw().transact({"from": rejecter}), "withdraw")
    assert ei.value.to.lower() == rejecter and ei.value.amount == REWARD
    with pytest.raises(E("WorkerRegistry_AmountTooLarge")):
        reverts_decoded(lambda: pr.contract.functions.stake().transact({"from": rejecter, "value": 2**96}), "stake")


def test_concurrent_sends_from_one_signer_get_distinct_nonces(chain, clients):
    from concurrent.futures import ThreadPoolExecutor

    _, dep, _, w3 = chain
    _, wr, worker = clients["worker"]
    start = w3.eth.get_transaction_count(worker)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: wr.stake(10**15), range(6)))
    assert len({r.tx_hash for r in results}) == 6
    assert w3.eth.get_transaction_count(worker) == start + 6
    assert wr.info(worker).total == 6 * 10**15


def test_claim_race_lost_in_the_same_block_names_its_reason(chain, clients):
    """Two claims of one job mined in ONE block: the second reverts. Replayed on the state before the
    block it would pass, so the reason comes from the state after it: JobMarket_WrongState (Claimed),
    which the worker takes as a lost race, not a failure."""
    anvil, _, _, w3 = chain
    pm = clients["poster"][0]
    job_id, _ = pm.post_job(_spec(w3), REWARD)
    sent = []
    for who in ("worker", "other"):
        clients[who][1].stake(STAKE)
    anvil.rpc("evm_setAutomine", [False])
    try:
        for who in ("worker", "other"):
            acct = clients[who][0].sender.account
            call = clients[who][0].contract.functions.claimJob(job_id)
            tx = build_tx(w3, call, acct.address, w3.eth.get_transaction_count(acct.address), gas=150_000)
            sent.append((w3.eth.send_raw_transaction(sign_tx(tx, acct).raw_transaction), tx))
        anvil.rpc("evm_mine")
    finally:
        anvil.rpc("evm_setAutomine", [True])
    (h1, tx1), (h2, tx2) = sent
    assert w3.eth.get_transaction_receipt(h1)["blockNumber"] == w3.eth.get_transaction_receipt(h2)["blockNumber"]
    assert wait_receipt(w3, bytes(h1), 10, tx1)["status"] == 1
    with pytest.raises(errors.error_class("JobMarket_WrongState")):
        wait_receipt(w3, bytes(h2), 10, tx2, "claimJob")
