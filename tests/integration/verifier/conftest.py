"""Anvil with Int8Verifier (and, for whole games, DisputeGame + MockMarket) deployed from forge
artifacts built into a temporary FOUNDRY_OUT; the build, deploy and anvil fixture are the dispute
tests' harness (tests/integration/dispute/harness.py)."""

from __future__ import annotations

import pytest
from web3 import Web3

from tests.integration.dispute.harness import anvil, build_artifacts, deploy  # noqa: F401 - fixture

SOURCES = [
    "contracts/src/dispute/Int8Verifier.sol",
    "contracts/src/dispute/DisputeGame.sol",
    "contracts/test/dispute/mocks/MockMarket.sol",
]


@pytest.fixture(scope="session")
def verifier_artifacts(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("forge-out-verifier"), SOURCES)


@pytest.fixture(scope="session")
def w3(anvil):  # noqa: F811 - pytest fixture parameter
    return Web3(Web3.HTTPProvider(anvil.url))


@pytest.fixture(scope="session")
def verifier(w3, verifier_artifacts):
    return deploy(w3, verifier_artifacts, "Int8Verifier")
