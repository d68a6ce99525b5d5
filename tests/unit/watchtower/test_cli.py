"""`gpumesh watchtower` at the CLI boundary: status reads the state file alone (table and JSON),
bad input is one line with a non-zero exit code."""

from __future__ import annotations

import json
import subprocess
import sys

from gpumesh.node.common.store import StateStore


def _gpumesh(*args: str, home) -> subprocess.CompletedProcess:
    code = "import sys; from gpumesh.client.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "--home", str(home), *args],
                          capture_output=True, text=True, timeout=120)


def _state(folder):
    s = StateStore(folder / "watchtower.sqlite")
    s.put("job", 3, {"status": "ok", "check": {"checked": [0, 1]}, "line": "job 3: checked 2/4 units: OK"})
    s.put("job", 4, {"status": "won", "game_id": 2, "check": {"checked": [0, 1, 2, 3]},
                     "line": "job 4: checked 4/4 units: MISMATCH unit 1"})
    s.put("game", 2, {"job_id": 4, "status": "won", "reason": "one_step"})
    for i in range(17):
        s.put("tx", f"game:2:move:{2 * i + 1}", {"tx": "0x" + "ab" * 32, "block": 10 + i, "gas": 1000 + i})
    s.close()


def test_status_json_and_table(tmp_path):
    _state(tmp_path)
    r = _gpumesh("watchtower", "status", "--state", str(tmp_path), "--json", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["jobs"]["4"]["game_id"] == 2 and st["games"]["2"]["reason"] == "one_step"
    assert (st["transactions"], st["gas_used"]) == (17, 17 * 1000 + sum(range(17)))
    r = _gpumesh("watchtower", "status", "--state", str(tmp_path), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "MISMATCH unit 1" in r.stdout and "one_step" in r.stdout and "17 transaction(s)" in r.stdout


def test_status_without_state_is_one_line(tmp_path):
    r = _gpumesh("watchtower", "status", "--state", str(tmp_path / "none"), home=tmp_path / "home")
    assert r.returncode == 2
    assert r.stderr.startswith("gpumesh: error: no watchtower state at") and r.stderr.count("\n") == 1


def test_bad_sample_rate_is_one_line(tmp_path):
    r = _gpumesh("watchtower", "run", "--sample-rate", "1.5", home=tmp_path / "home")
    assert r.returncode == 2
    assert r.stderr == "gpumesh: error: --sample-rate: sample rate must be in (0, 1], got 1.5\n"


def test_unreachable_chain_is_one_line(tmp_path):
    dep = tmp_path / "dep.json"
    dep.write_text(json.dumps({"version": 1, "chain_id": 31337, "deploy_block": 1, "rpc_url": None,
                               "addresses": {"JobMarket": "0x" + "11" * 20, "WorkerRegistry": "0x" + "22" * 20,
                                             "DisputeGame": "0x" + "33" * 20}}))
    r = _gpumesh("watchtower", "run", "--account", "dev3", "--rpc-url", "http://127.0.0.1:9",
                 "--deployment", str(dep), home=tmp_path / "home")
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith("gpumesh: error: RPC at http://127.0.0.1:9 is unreachable")
    assert r.stderr.count("\n") == 1
