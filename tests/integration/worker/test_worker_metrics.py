"""What operators of both daemons read (issue #16, stumble 4), from the real `gpumesh worker run`
and `gpumesh watchtower run` processes on anvil: one log format for both, each announces its
metrics URL, and the worker's /metrics has the gauges (stake, free stake, locked stake, balance,
active jobs, outbox depth) and the RPC counters (requests by method, errors)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gpumesh.client.services.accounts import dev_account

pytestmark = pytest.mark.integration
ETH = 10**18
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) +gpumesh\.[a-z.]+: .+")


def _run(env, tmp_path: Path, log: Path, *argv: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gpumesh.client.cli.main", "--home", str(tmp_path / "home"), "--rpc-url",
           env.anvil.url, "--ipfs-api", env.ipfs.api_multiaddr, *argv, "--deployment", str(env.dep_path),
           "--metrics-port", "0", "--interval", "0.1"]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _metrics_url(proc: subprocess.Popen, log: Path) -> str:
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
        if m:
            return m.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError("no metrics URL announced: " + log.read_text())


def _scrape(url: str, want: str) -> str:
    t_end = time.monotonic() + 30
    while True:
        text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - our local server
        if want in text or time.monotonic() > t_end:
            return text
        time.sleep(0.2)


def _value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_both_daemons_log_alike_and_the_worker_exports_its_gauges(env, tmp_path):
    env.registry(2).stake(2 * ETH)
    wlog, tlog = tmp_path / "worker.log", tmp_path / "tower.log"
    worker = _run(env, tmp_path, wlog, "worker", "run", "--account", "dev2", "--state", str(tmp_path / "w"))
    tower = _run(env, tmp_path, tlog, "watchtower", "run", "--account", "dev3", "--state", str(tmp_path / "t"))
    try:
        url = _metrics_url(worker, wlog)
        text = _scrape(url, "gpumesh_worker_stake_wei 2")
        assert _value(text, "gpumesh_worker_stake_wei") == 2 * ETH
        assert _value(text, "gpumesh_worker_free_stake_wei") == 2 * ETH
        assert _value(text, "gpumesh_worker_locked_stake_wei") == 0
        assert 0 < _value(text, "gpumesh_worker_balance_wei") <= env.w3.eth.get_balance(dev_account(2).address)
        assert _value(text, "gpumesh_worker_active_jobs") == 0
        assert _value(text, "gpumesh_worker_outbox_depth") == 0
        assert _value(text, 'gpumesh_worker_rpc_requests_total{method="eth_chainId"}') == 1
        assert _value(text, 'gpumesh_worker_rpc_requests_total{method="eth_getBlockByNumber"}') >= 1
        assert _value(text, "gpumesh_worker_rpc_errors_total") == 0
        turl = _metrics_url(tower, tlog)
        ttext = _scrape(turl, "gpumesh_watchtower_rpc_requests_total")
        assert _value(ttext, 'gpumesh_watchtower_rpc_requests_total{method="eth_chainId"}') == 1
    finally:
        for p in (worker, tower):
            _stop(p)
    for log in (wlog, tlog):
        lines = [ln for ln in log.read_text().splitlines() if ln and not ln.endswith(" stopped")]
        assert lines and all(LINE.fullmatch(ln) for ln in lines), log.read_text()
