"""Anvil with Int8Verifier (and, for whole games, DisputeGame + MockMarket) deployed from forge
artifacts built into a temporary FOUNDRY_OUT (no clash with other builds of the checkout)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from web3 import Web3

from gpumesh.client.chain.anvil import start_anvil

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    "contracts/src/dispute/Int8Verifier.sol",
    "contracts/src/dispute/DisputeGame.sol",
    "contracts/test/dispute/mocks/MockMarket.sol",
]


def build_artifacts(out: Path) -> dict[str, tuple[list, str]]:
    env = dict(os.environ, FOUNDRY_OUT=str(out), FOUNDRY_CACHE_PATH=str(out / "cache"))
    subprocess.run(  # noqa: S603 - fixed argv
        [str(ROOT / "node_modules/.bin/forge"), "build", "--quiet", *SOURCES],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )

    def load(name: str) -> tuple[list, str]:
        doc = json.loads((out / f"{name}.sol" / f"{name}.json").read_text())
        return doc["abi"], doc["bytecode"]["object"]

    return {n: load(n) for n in ("Int8Verifier", "DisputeGame", "MockMarket")}


def deploy(w3: Web3, artifacts, name: str, *args):
    abi, bytecode = artifacts[name]
    c = w3.eth.contract(abi=abi, bytecode=bytecode)
    tx = c.constructor(*args).transact({"from": w3.eth.accounts[0]})
    rcpt = w3.eth.wait_for_transaction_receipt(tx)
    assert rcpt.status == 1
    return w3.eth.contract(address=rcpt.contractAddress, abi=abi)


@pytest.fixture(scope="session")
def verifier_artifacts(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("forge-out-verifier"))


@pytest.fixture(scope="session")
def anvil():
    with start_anvil() as a:
        yield a


@pytest.fixture(scope="session")
def w3(anvil):
    return Web3(Web3.HTTPProvider(anvil.url))


@pytest.fixture(scope="session")
def verifier(w3, verifier_artifacts):
    return deploy(w3, verifier_artifacts, "Int8Verifier")
