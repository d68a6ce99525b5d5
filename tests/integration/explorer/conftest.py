"""The explorer's scenario on the shared node devnet (tests/integration/nodes/conftest.py): an honest
job checked by a watchtower and paid, a cheating worker's job challenged, played down to one element
by the real Int8Verifier and slashed, and a job still open. Built once per module inside an
evm_snapshot that is reverted afterwards."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.integration.nodes.conftest import *  # noqa: F403 - shared node fixtures
from tests.integration.nodes.conftest import (
    Corruption,
    PostedJob,
    SubmittedJob,
    post_digits_job,
    submit_as_worker,
)
from tests.integration.watchtower.helpers import DefendingWorker, make_tower, run

#: One element in the middle of op 4 (conv2) of unit 1: the corruption reaches the unit's output
#: (tests/integration/watchtower/test_watchtower.py plays the same one).
CHEAT = Corruption(unit=1, op=4, element=57773, delta=127)
WINDOW = 3600


@dataclass
class Scenario:
    dn: object
    honest: PostedJob
    cheat: SubmittedJob
    open_job: PostedJob
    game_id: int
    corruption: Corruption


@pytest.fixture(scope="module")
def scenario(node_devnet, tmp_path_factory):
    dn = node_devnet
    snap = dn.anvil.rpc("evm_snapshot")
    tmp = tmp_path_factory.mktemp("explorer-scenario")
    try:
        honest = post_digits_job(dn, num_units=4, challenge_window=WINDOW)
        submit_as_worker(dn, honest)
        tower = make_tower(dn, tmp / "wt.sqlite")
        run(tower)  # checks the honest result: OK, no game
        dn.anvil.rpc("evm_increaseTime", [WINDOW + 1])
        dn.anvil.rpc("evm_mine")
        dn.market("worker").finalize_job(honest.job_id)

        job = post_digits_job(dn, num_units=4, challenge_window=WINDOW)
        cheat = submit_as_worker(dn, job, worker="cheater", corruptions=(CHEAT,))
        run(tower, DefendingWorker(dn, cheat, tmp / "cheater.sqlite", role="cheater"))
        (gid,) = dn.game().games_of_job(job.job_id)

        open_job = post_digits_job(dn, num_units=2, reward=dn_reward(), challenge_window=WINDOW)
        yield Scenario(dn, honest, cheat, open_job, int(gid), CHEAT)
    finally:
        dn.close_stores()
        assert dn.anvil.rpc("evm_revert", [snap]) is True


def dn_reward() -> int:
    return 3 * 10**17  # 0.3 ETH: a reward the page must show as "0.3 ETH"


@pytest.fixture()
def explorer(scenario):
    from gpumesh.client.explorer.reader import Explorer

    dn = scenario.dn
    ex = Explorer(dn.w3(), dn.deployment, dn.store(), network="devnet")
    ex.sync()
    return ex
