"""docs/networks.md section 1 on a real anvil: the documented `forge script ... --broadcast` route,
then `gpumesh deploy from-broadcast` into a deployment file that the other commands read; `gpumesh
deploy contracts` from an account; and a hand-written file without "version" refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gpumesh.client.chain.anvil import start_anvil
from gpumesh.client.services.accounts import dev_account
from tests.cli_run import run_cli

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def anvil():
    with start_anvil() as a:
        yield a


@pytest.fixture()
def gm(tmp_path, capsys):
    return lambda *args, code=0: run_cli(capsys, tmp_path / "home", *args, code=code)


def test_forge_script_route_then_from_broadcast(anvil, gm, tmp_path):
    # the command of docs/networks.md, with the record kept out of the checkout
    env = {**os.environ, "GPUMESH_DEPLOYER_KEY": dev_account(0).key.hex(), "GPUMESH_UNBONDING_DELAY": "3600",
           "FOUNDRY_BROADCAST": str(tmp_path / "broadcast")}
    env["GPUMESH_DEPLOYER_KEY"] = "0x" + env["GPUMESH_DEPLOYER_KEY"].removeprefix("0x")
    subprocess.run([str(REPO / "node_modules/.bin/forge"), "script", "contracts/script/Deploy.s.sol", "--broadcast",
                    "--skip", "test", "--rpc-url", anvil.url], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    record = tmp_path / "broadcast/Deploy.s.sol/31337/run-latest.json"
    dep_file = tmp_path / "sepolia.json"
    out, _ = gm("deploy", "from-broadcast", str(record), "--rpc-url", anvil.url, "--out", str(dep_file), "--json")
    shown = json.loads(out)
    written = json.loads(dep_file.read_text())
    assert written["version"] == 1 and written["chain_id"] == 31337 == shown["chain_id"]
    assert set(written["addresses"]) == {"WorkerRegistry", "JobMarket", "DisputeGame", "Int8Verifier"}
    for addr in written["addresses"].values():  # each holds code on the chain
        assert anvil.rpc("eth_getCode", [addr, "latest"]) not in ("0x", "")
    assert written["deploy_block"] >= 1
    # every command reads it: a job list, and the market the registry was built for
    out, _ = gm("--rpc-url", anvil.url, "job", "list", "--deployment", str(dep_file), "--json")
    assert json.loads(out) == []
    out, _ = gm("--rpc-url", anvil.url, "worker", "stake", "1", "--account", "dev2", "--deployment", str(dep_file))
    assert out.startswith("staked 1 ETH")
    # not replaced without --force; a record that is not one: one line
    _, err = gm("deploy", "from-broadcast", str(record), "--out", str(dep_file), code=2)
    assert err == f"gpumesh: error: {dep_file} exists: pass --force to replace it, or --out another file\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"chain": 31337}')
    _, err = gm("deploy", "from-broadcast", str(bad), "--out", str(tmp_path / "x.json"), code=4)
    assert err.startswith("gpumesh: error: unexpected broadcast record: missing") and err.count("\n") == 1


def test_deploy_contracts_from_an_account(anvil, gm, tmp_path):
    dep_file = tmp_path / "dep.json"
    out, _ = gm("--rpc-url", anvil.url, "deploy", "contracts", "--account", "dev0", "--unbonding-delay", "1h",
                "--game-clock", "2h", "--min-bond", "0.02", "--out", str(dep_file))
    assert out.startswith(f"wrote {dep_file} (chain 31337, from block ")
    dep = json.loads(dep_file.read_text())
    out, _ = gm("--rpc-url", anvil.url, "job", "list", "--deployment", str(dep_file), "--json")
    assert json.loads(out) == []
    # the parameters reached the contracts: the market's bond floor
    from gpumesh.client.chain.contracts import JobMarketClient, connect
    from gpumesh.client.chain.deploy import Deployment

    d = Deployment.load(dep_file)
    market = JobMarketClient(connect(anvil.url, d), d.market)
    assert market._call("minDisputeBond") == 2 * 10**16
    assert dep["addresses"]["JobMarket"] == d.market


def test_a_file_without_version_is_refused_saying_so(anvil, gm, tmp_path):
    f = tmp_path / "hand.json"
    f.write_text(json.dumps({"chain_id": 31337, "addresses": {}, "deploy_block": 0}))
    _, err = gm("--rpc-url", anvil.url, "job", "list", "--deployment", str(f), code=4)
    assert err == ('gpumesh: error: not a gpumesh deployment file: no "version" field (this gpumesh reads '
                   '"version": 1)\n')
