"""One real anvil with the contracts deployed by Deploy.s.sol for the chain integration tests; each
test runs on an evm_snapshot that is reverted afterwards, so tests do not see each other's state."""

from __future__ import annotations

import pytest

from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
from gpumesh.client.chain.deploy import deploy
from gpumesh.client.services.accounts import dev_account
from tests.chain_node import start_test_node

UNBONDING = 3600


@pytest.fixture(scope="session")
def devchain(tmp_path_factory):
    with start_test_node() as anvil:
        dep = deploy(anvil.url, dev_account(0).key.hex(), unbonding_delay=UNBONDING)
        path = tmp_path_factory.mktemp("deployment") / "devnet.json"
        dep.save(path)
        yield anvil, dep, path


@pytest.fixture()
def chain(devchain):
    anvil, dep, path = devchain
    snap = anvil.rpc("evm_snapshot")
    w3 = connect(anvil.url, dep)
    yield anvil, dep, path, w3
    assert anvil.rpc("evm_revert", [snap]) is True


@pytest.fixture()
def clients(chain):
    """(market, registry) clients for dev1..dev4: poster=dev1, worker=dev2, other=dev3, challenger=dev4."""
    _, dep, _, w3 = chain

    def make(i):
        acct = dev_account(i)
        return (JobMarketClient.with_account(w3, dep.market, acct),
                WorkerRegistryClient.with_account(w3, dep.registry, acct), acct.address)

    return {name: make(i) for name, i in (("poster", 1), ("worker", 2), ("other", 3), ("challenger", 4))}
