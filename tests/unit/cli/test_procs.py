"""Process helpers: missing toolchain, busy ports, crashed children — each one clear error."""

import socket
import sys

import pytest

from gpumesh.client.services import procs


def test_missing_tool_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(procs, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(procs.ProcessError, match=r"^anvil not found: run `make setup`"):
        procs.find_tool("anvil")


def test_busy_port_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not procs.port_is_free(port)
        with pytest.raises(procs.ProcessError, match=f"port {port} for anvil is busy"):
            procs.choose_port(port, "anvil", "--anvil-port")
    assert procs.choose_port(0, "anvil", "") > 0


def test_child_that_crashes_during_start_up(tmp_path):
    log = tmp_path / "child.log"
    pid = procs.spawn_detached([sys.executable, "-c", "print('bad flag --foo'); raise SystemExit(2)"], log)
    with pytest.raises(procs.ProcessError, match=r"^child exited during start-up: bad flag --foo$"):
        procs.wait_ready(lambda: False, pid, "child", log, timeout=20)


def test_stop_pid_kills_the_process_group(tmp_path):
    pid = procs.spawn_detached([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "l.log")
    assert procs.pid_alive(pid)
    assert procs.stop_pid(pid, grace=5)
    assert not procs.pid_alive(pid)
