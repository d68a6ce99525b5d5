"""`gpumesh explorer show` (the API's JSON on stdout) in-process, and `gpumesh explorer serve` as a user
runs it (a process on a free port, read over HTTP, stopped with Ctrl-C), against the scenario's devnet."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main

pytestmark = pytest.mark.integration

GPUMESH = str(Path(sys.executable).with_name("gpumesh"))


def flags(scenario, tmp_path) -> list[str]:
    dn = scenario.dn
    return ["--home", str(tmp_path / "home"), "--rpc-url", dn.rpc_url, "--ipfs-api", dn.ipfs_api]


def gm(scenario, tmp_path, capsys, *args: str, code: int = 0) -> tuple[str, str]:
    cli_state._settings = None  # each invocation builds its Settings, as a new process would
    rc = main([*flags(scenario, tmp_path), "explorer", *args, "--deployment", str(scenario.dn.deployment_path)])
    out, err = capsys.readouterr()
    assert rc == code, (rc, out, err)
    return out, err


def test_show_prints_the_apis_json(scenario, tmp_path, capsys):
    jobs = json.loads(gm(scenario, tmp_path, capsys, "show", "jobs")[0])["jobs"]
    assert [j["state"] for j in jobs] == ["Open", "Slashed", "Finalized"]
    game = json.loads(gm(scenario, tmp_path, capsys, "show", "game", str(scenario.game_id))[0])
    assert game["summary"].endswith("challenger won (one step)")
    assert [s["final"] for s in game["path"]][::3] == [scenario.corruption.unit, scenario.corruption.element]
    opened = json.loads(gm(scenario, tmp_path, capsys, "show", "jobs", "--state", "open")[0])["jobs"]
    assert [j["id"] for j in opened] == [scenario.open_job.job_id]


@pytest.mark.parametrize("args,line", [
    (("show", "game", "99"), "game 99 is not on this chain (games: 1)"),
    (("show", "job", "abc"), "job id must be a whole number, got 'abc'"),
    (("show", "worker", "0x12"), "not an address (0x + 40 hex): '0x12'"),
    (("show", "planets"), "unknown kind 'planets'"),
    (("show", "job"), "give the id"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(scenario, tmp_path, capsys, args, line):
    _, err = gm(scenario, tmp_path, capsys, *args, code=2)
    assert err.count("\n") == 1 and err.startswith("gpumesh: error: ") and line in err, err


def test_serve_answers_over_http_until_ctrl_c(scenario, tmp_path):
    p = subprocess.Popen([GPUMESH, *flags(scenario, tmp_path), "explorer", "serve", "--port", "0",
                          "--deployment", str(scenario.dn.deployment_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            m = re.search(r"open (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "serve never printed its URL"
        ov = json.loads(urllib.request.urlopen(url + "api/overview", timeout=10).read())
        assert ov["counts"] == {"jobs": 3, "workers": 2, "watchtowers": 1, "games": 1}
        page = urllib.request.urlopen(url, timeout=10)
        assert "gpumesh explorer" in page.read().decode() and "default-src 'self'" in page.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "api/jobs/77", timeout=10)
        assert e.value.code == 404 and "job 77 is not on this chain" in json.loads(e.value.read())["error"]
        # the outputs link: the file as the worker published it, read through IPFS and checked against its CID
        job = json.loads(urllib.request.urlopen(url + f"api/jobs/{scenario.cheat.job.job_id}", timeout=10).read())
        body = urllib.request.urlopen(url + job["outputs_url"].lstrip("/"), timeout=10).read()
        assert body == (scenario.cheat.job.program_dir.parent
                        / f"outputs-{scenario.cheat.result_root.hex()[:12]}.safetensors").read_bytes()
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0 and "explorer: stopped" in out and "Traceback" not in err, (out, err)
