"""Reorgs on anvil (anvil_reorg, issue #15): a reorg removes the block holding the watchtower's
challenge (the game it opened is gone from the chain). The watchtower notices the replaced block,
sends the same signed challenge again, and plays the game to the cheater's slash; the game is not
counted twice."""

from __future__ import annotations

import logging

import pytest

from gpumesh.client.core.game import Outcome
from tests.chain_node import CHAIN
from tests.integration.nodes.conftest import Corruption, post_digits_job, submit_as_worker
from tests.integration.watchtower.helpers import DefendingWorker, make_tower, run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHAIN != "anvil", reason="anvil_reorg is anvil's (Hardhat's node has no reorg method)"),
]


def test_reorg_removing_the_challenge_is_redone(devnet, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gpumesh")
    job = post_digits_job(devnet, num_units=2)
    sub = submit_as_worker(devnet, job, corruptions=(Corruption(unit=1, op=11, element=2, delta=3),))
    tower = make_tower(devnet, tmp_path / "wt.sqlite")
    w3, game = devnet.w3(), devnet.game()
    before = w3.eth.block_number
    while not game.games_of_job(job.job_id):
        tower.tick()  # checks the units, finds the mismatch, opens the game
    (gid,) = game.games_of_job(job.job_id)
    head = w3.eth.block_number
    devnet.anvil.rpc("anvil_reorg", [head - before, []])  # the challenge's block is replaced
    devnet.anvil.rpc("evm_mine")  # the chain moves on (a new head: the watchtower's next full tick)
    assert game.games_of_job(job.job_id) == [] and devnet.market().get_job(job.job_id).open_disputes == 0

    run(tower, DefendingWorker(devnet, sub, tmp_path / "worker.sqlite"))
    assert "transaction(s) of this watchtower sent again" in caplog.text
    assert game.games_of_job(job.job_id) == [gid], "the same challenge again, one game"
    assert game.get_game(gid).outcome == Outcome.CHALLENGER_WON
    assert devnet.market().is_slashed(job.job_id)
    assert tower.state.outbox_get(f"job:{job.job_id}:challenge#1") is None, "no second signature"
