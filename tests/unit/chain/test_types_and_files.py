"""Pure parts of the chain adapter: amount/duration parsing, typed values, the deployment file,
the event cursor file, and finding the anvil binary."""

from __future__ import annotations

import json

import pytest

from gpumesh.client.chain.abi_store import load_abi
from gpumesh.client.chain.anvil import AnvilError, find_anvil
from gpumesh.client.chain.deploy import DeployError, Deployment, parse_broadcast
from gpumesh.client.chain.events import Cursor, JsonCursorStore
from gpumesh.client.chain.types import Job, JobSpec, JobState, parse_duration, parse_wei
from gpumesh.client.core.errors import ChainError


@pytest.mark.parametrize("text,wei", [("1", 10**18), ("1.5", 15 * 10**17), ("0.2eth", 2 * 10**17),
                                      ("20gwei", 20 * 10**9), ("123wei", 123), ("1_000wei", 1000), ("0", 0)])
def test_parse_wei(text, wei):
    assert parse_wei(text) == wei


@pytest.mark.parametrize("text", ["-1", "abc", "0.5wei", "1e-30"])
def test_parse_wei_rejects(text):
    with pytest.raises(ValueError):
        parse_wei(text)


@pytest.mark.parametrize("text,sec", [("90", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800)])
def test_parse_duration(text, sec):
    assert parse_duration(text) == sec


def test_job_spec_checks_roots():
    ok = dict(spec_cid="c", program_root="0x" + "11" * 32, inputs_root=b"\x22" * 32, num_units=1, required_stake=1,
              claim_deadline=1, execution_time=1, challenge_window=1, min_gpu_memory_mib=0, dispute_bond=1)
    spec = JobSpec(**ok)
    assert spec.program_root == b"\x11" * 32
    assert spec.as_tuple()[1] == b"\x11" * 32
    with pytest.raises(ValueError):
        JobSpec(**{**ok, "inputs_root": b"\x01" * 31})


def test_job_fields_follow_the_abi_component_order():
    """Job.from_abi unpacks getJob's tuple positionally: its order must be the ABI's."""
    get_job = next(e for e in load_abi("JobMarket") if e.get("name") == "getJob")
    abi_names = [c["name"] for c in get_job["outputs"][0]["components"]]
    py_names = [f for f in Job.__dataclass_fields__ if f != "job_id"]
    to_snake = [n[0] + "".join("_" + ch.lower() if ch.isupper() else ch for ch in n[1:]) for n in abi_names]
    assert py_names == to_snake


def test_job_state_matches_solidity_enum_order():
    assert [s.name for s in JobState] == ["NONE", "OPEN", "CLAIMED", "SUBMITTED", "FINALIZED", "CANCELLED",
                                         "EXPIRED", "SLASHED"]


def test_deployment_roundtrip(tmp_path):
    d = Deployment(31337, {"JobMarket": "0x" + "ab" * 20, "WorkerRegistry": "0x" + "cd" * 20}, 5, "http://x")
    p = tmp_path / "sub" / "devnet.json"
    d.save(p)
    assert Deployment.load(p) == d
    assert d.market == "0x" + "ab" * 20
    with pytest.raises(ChainError, match="no DisputeGame address"):
        _ = d.dispute_game
    with pytest.raises(ChainError, match="no deployment file"):
        Deployment.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"version": 99}')
    with pytest.raises(ChainError, match="not a gpumesh deployment file"):
        Deployment.load(tmp_path / "bad.json")


def test_parse_broadcast():
    rec = {"chain": 31337, "returns": {
        "registry": {"internal_type": "address", "value": "0x5fbdb2315678afecb367f032d93f642f64180aa3"},
        "market": {"internal_type": "address", "value": "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"},
        "verifier": {"internal_type": "address", "value": "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0"},
        "disputeGame": {"internal_type": "address", "value": "0xcf7ed3acca5a467e9e704c703e8d87f634fb0fc9"}},
        "receipts": [{"blockNumber": "0x3"}, {"blockNumber": "0x2"}]}
    d = parse_broadcast(rec)
    assert d.registry == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert d.address("Int8Verifier") == "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
    assert d.dispute_game == "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
    assert d.deploy_block == 2 and d.chain_id == 31337
    with pytest.raises(DeployError):
        parse_broadcast({**rec, "receipts": []})
    with pytest.raises(DeployError):
        parse_broadcast({"chain": 1})


def test_cursor_store_roundtrip_and_corruption(tmp_path):
    store = JsonCursorStore(tmp_path / "c.json")
    assert store.load() is None
    c = Cursor(12, "0xabc", ("0xabc:1",))
    store.save(c)
    assert store.load() == c
    (tmp_path / "c.json").write_text(json.dumps({"block": "x"}))
    with pytest.raises(ChainError, match="corrupt"):
        store.load()


def test_find_anvil_reports_a_missing_explicit_binary(tmp_path):
    with pytest.raises(AnvilError, match="anvil not found"):
        find_anvil(tmp_path / "nope")


def test_the_native_foundry_binary_is_preferred_to_the_node_launcher(tmp_path):
    from gpumesh.client.chain.anvil import native_foundry_binary

    nm = tmp_path / "node_modules"
    assert native_foundry_binary(nm, "anvil") is None  # nothing installed
    launcher = nm / ".bin" / "anvil"
    native = nm / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    for p in (launcher, native):
        p.parent.mkdir(parents=True)
        p.write_text("#!/bin/sh\n")
    assert native_foundry_binary(nm, "anvil") is None  # not executable
    native.chmod(0o755)
    assert native_foundry_binary(nm, "anvil") == native
    assert native_foundry_binary(nm, "forge") is None


def test_foundry_binary_falls_back_to_the_launcher_then_nothing(tmp_path):
    from gpumesh.client.chain.anvil import foundry_binary

    nm = tmp_path / "node_modules"
    assert foundry_binary(nm, "anvil") is None
    launcher = nm / ".bin" / "anvil"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert foundry_binary(nm, "anvil") == launcher
    native = nm / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    native.parent.mkdir(parents=True)
    native.write_text("#!/bin/sh\n")
    native.chmod(0o755)
    assert foundry_binary(nm, "anvil") == native
