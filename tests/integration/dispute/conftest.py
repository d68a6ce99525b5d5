"""Anvil with DisputeGame + MockMarket + ToyStepper deployed from fresh forge artifacts; the game
harness (Chain, play, deploy, the anvil fixture) is tests/integration/dispute/harness.py."""

from __future__ import annotations

import pytest

from tests.integration.dispute.harness import CLOCK, Chain, anvil, build_artifacts  # noqa: F401 - fixture

SOURCES = [
    "contracts/src/dispute/DisputeGame.sol",
    "contracts/test/dispute/mocks/MockMarket.sol",
    "contracts/test/dispute/mocks/ToyStepper.sol",
]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("forge-out"), SOURCES)


@pytest.fixture()
def make_chain(anvil, artifacts):  # noqa: F811 - pytest fixture parameter
    snap = anvil.rpc("evm_snapshot")
    yield lambda k: Chain(anvil, artifacts, k)
    assert anvil.rpc("evm_revert", [snap]) is True
