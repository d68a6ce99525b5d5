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
