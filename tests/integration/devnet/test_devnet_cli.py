"""`gpumesh devnet up | status | down` against the real anvil, embedded IPFS node and forge deploy,
run as the user runs it (the installed console script, in subprocesses)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GPUMESH = str(Path(sys.executable).with_name("gpumesh"))


def gm(home: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMESH_")}
    env["GPUMESH_HOME"] = str(home)
    return subprocess.run([GPUMESH, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    gm(tmp_path, "devnet", "down")  # never leave a daemon behind, whatever the test did


def test_up_status_down_leaves_nothing_behind(home):
    r = gm(home, "devnet", "up", "--anvil-port", "0", "--ipfs-port", "0", "--json")
    assert r.returncode == 0, r.stderr
    up = json.loads(r.stdout)
    assert up["up"] and up["state"]["chain_id"] == 31337
    dep = up["deployment"]
    assert dep and all(v.startswith("0x") for v in dep["addresses"].values())

    # the deployment file the other commands read, and code at every address
    dep_file = json.loads(Path(up["state"]["deployment_file"]).read_text())
    assert dep_file["addresses"] == dep["addresses"]

    again = gm(home, "devnet", "up")
    assert again.returncode != 0 and "already up" in again.stderr and again.stderr.count("\n") == 1

    st = gm(home, "devnet", "status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["anvil_alive"]

    pids = [up["state"]["anvil_pid"], up["state"]["ipfs_pid"]]
    down = gm(home, "devnet", "down")
    assert down.returncode == 0 and "anvil" in down.stdout
    assert not any(_alive(p) for p in pids)
    assert gm(home, "devnet", "status").returncode == 1


def test_restart_restores_chain_state_without_redeploying(home):
    r1 = json.loads(gm(home, "devnet", "up", "--anvil-port", "0", "--ipfs-port", "0", "--json").stdout)
    assert gm(home, "devnet", "down").returncode == 0
    r2 = gm(home, "devnet", "up", "--anvil-port", "0", "--ipfs-port", "0")
    assert r2.returncode == 0, r2.stderr
    assert "contracts already deployed (state restored)" in r2.stderr
    st = json.loads(gm(home, "devnet", "status", "--json").stdout)
    assert st["deployment"]["addresses"] == r1["deployment"]["addresses"]
    assert st["block_number"] >= r1["block_number"]


def test_busy_port_is_one_clear_line(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = gm(home, "devnet", "up", "--anvil-port", str(port), "--ipfs-port", "0")
    assert r.returncode != 0
    assert r.stderr.strip() == (
        f"gpumesh: error: port {port} for anvil is busy: stop what uses it or choose another "
        "(--anvil-port / GPUMESH_ANVIL_PORT)"
    )
    assert not (home / "devnet" / "state.json").exists()


def test_unreachable_external_ipfs_is_one_clear_line(home):
    r = gm(home, "--ipfs-api", "/ip4/127.0.0.1/tcp/9", "devnet", "up", "--anvil-port", "0")
    assert r.returncode != 0
    assert r.stderr.strip() == "gpumesh: error: IPFS API at http://127.0.0.1:9 is unreachable"
    assert not (home / "devnet" / "state.json").exists()
