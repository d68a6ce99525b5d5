"""`gpumesh ipfs daemon` as the devnet runs it: a separate process started through the console script.

It announces its API, writes REPO/api, serves ipfshttpclient, stops cleanly on SIGTERM, and refuses
a busy port or a repo that another node holds with one clear line and a non-zero exit.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]

GPUMESH = Path(sys.executable).parent / "gpumesh"
READY = re.compile(r"^API server listening on (/ip4/127\.0\.0\.1/tcp/(\d+))$")


def _start(repo: Path, port: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [str(GPUMESH), "ipfs", "daemon", "--api", f"/ip4/127.0.0.1/tcp/{port}", "--repo", str(repo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _first_line(proc: subprocess.Popen, timeout: float = 30) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out:
        proc.kill()
        pytest.fail(f"daemon printed nothing in {timeout} s")
    return out[0].rstrip("\n")


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _refused(proc: subprocess.Popen) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=60)
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def daemon(tmp_path):
    repo = tmp_path / "repo"
    proc = _start(repo)
    try:
        line = _first_line(proc)
        m = READY.match(line)
        assert m, f"unexpected first line {line!r}"
        yield proc, repo, m.group(1), int(m.group(2))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_daemon_announces_serves_and_stops_cleanly(daemon):
    import ipfshttpclient

    proc, repo, api, port = daemon
    assert port > 0
    assert (repo / "api").read_text().strip() == api
    warnings.filterwarnings("ignore", category=FutureWarning, module="urllib3")
    with ipfshttpclient.Client(api) as client:
        assert client.add_bytes(b"hello world\n") == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        data = os.urandom(300_000)
        cid = client.add_bytes(data)
        assert client.cat(cid) == data
        assert client.cat(cid, offset=1000, length=10) == data[1000:1010]
    assert _children(proc.pid) == []  # nothing to leave behind

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not (repo / "api").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_sigint_stops_it_too(daemon):
    proc, repo, _, _ = daemon
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert not (repo / "api").exists()


def test_a_second_daemon_on_the_same_repo_is_refused(daemon):
    first, repo, api, _ = daemon
    rc, lines = _refused(_start(repo))
    assert rc != 0
    assert lines == [f"gpumesh: error: repo {repo} is locked by another running node"]
    assert first.poll() is None  # the first one is untouched and still owns its api file
    assert (repo / "api").read_text().strip() == api


def test_a_busy_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, lines = _refused(_start(tmp_path / "repo", port))
    assert rc != 0
    assert lines == [f"gpumesh: error: cannot listen on 127.0.0.1:{port} (Address already in use)"]
    assert not (tmp_path / "repo" / "api").exists()
