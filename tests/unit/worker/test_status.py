"""`gpumesh worker status` reads the worker's state file: each job's status and why it was skipped,
and the refusals counted per reason."""

import json

from gpumesh.client.cli.main import main
from gpumesh.node.common.store import StateStore
from gpumesh.node.worker.app import STATE_FILE


def test_status_shows_refusals(tmp_path, capsys):
    st = StateStore(tmp_path / STATE_FILE)
    st.put("job", 1, {"status": "skipped", "refusal": "stake_ratio", "reason": "required stake 2 ETH is over ...",
                      "attempts": 0})
    st.put("job", 2, {"status": "skipped", "refusal": "short_execution_time", "reason": "execution time 600s ...",
                      "estimate_s": 0.25})
    st.put("job", 3, {"status": "done", "reason": "finalized, reward 0.5 ETH"})
    st.put("job", 4, {"status": "skipped", "refusal": "stake_ratio", "reason": "required stake ..."})
    st.close()
    assert main(["--home", str(tmp_path), "worker", "status", "--state", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refusals"] == {"short_execution_time": 1, "stake_ratio": 2}
    assert out["jobs"]["2"] == {"status": "skipped", "refusal": "short_execution_time",
                                "reason": "execution time 600s ...", "estimate_s": 0.25}
    assert "attempts" not in out["jobs"]["1"]
    assert main(["--home", str(tmp_path), "worker", "status", "--state", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "refusals: short_execution_time 1, stake_ratio 2" in text


def test_status_without_state_is_one_line(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "worker", "status", "--state", str(tmp_path / "none")]) != 0
    assert "no worker state at" in capsys.readouterr().err


def test_status_shows_capabilities_and_measured_throughput(tmp_path, capsys):
    """The capability document the worker published (GPU model and memory) and the throughput it
    measured per program root come back in `worker status --json` from the state file alone."""
    st = StateStore(tmp_path / STATE_FILE)
    st.put("self", "capabilities", {"device": "cuda", "max_gpu_memory_mib": 143771, "cid": "bafyCAPS",
                                    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_mib": 143771,
                                              "compute_capability": "9.0", "uuid": "GPU-x", "driver": "570"}],
                                    "cpu": {"model": "x", "logical_cores": 16}, "ops": ["relu"]})
    st.put("throughput", "ab" * 32, {"device": "cuda", "seconds_per_unit": 0.004, "units_per_second": 250.0,
                                     "stack": 8, "program_cid": "bafyP"})
    st.close()
    assert main(["--home", str(tmp_path), "worker", "status", "--state", str(tmp_path), "--json"]) == 0
    cap = json.loads(capsys.readouterr().out)["capabilities"]
    assert cap["gpus"] == [{"name": "NVIDIA H200", "memory_mib": 143771, "compute_capability": "9.0"}]
    assert cap["device"] == "cuda" and cap["cid"] == "bafyCAPS" and "ops" not in cap
    assert cap["throughput"] == {"0x" + "ab" * 32: {"device": "cuda", "units_per_second": 250.0,
                                                    "seconds_per_unit": 0.004}}
    assert main(["--home", str(tmp_path), "worker", "status", "--state", str(tmp_path)]) == 0
    assert "GPUs NVIDIA H200 (143771 MiB); program 0xabababab… 250 units/s" in capsys.readouterr().out
