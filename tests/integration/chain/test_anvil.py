"""start_anvil: starts on a free port, answers, stops without leaving a process; clear errors for a
busy port, a missing binary and an early exit."""

from __future__ import annotations

import os
import socket

import pytest

from gpumesh.client.chain.anvil import AnvilError, start_anvil

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_answers_and_stop_leaves_nothing(tmp_path):
    with start_anvil(accounts=3, state_dir=tmp_path / "state") as a:
        assert a.chain_id == 31337
        assert int(a.rpc("eth_chainId"), 16) == 31337
        assert len(a.rpc("eth_accounts")) == 3
        pid = a.pid
        assert _pid_alive(pid)
    assert not _pid_alive(pid)
    assert (tmp_path / "state" / "anvil-state.json").exists()  # dumped on exit, reloaded next start


def test_busy_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(AnvilError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_anvil(port=port)


def test_missing_binary_and_early_exit(tmp_path):
    with pytest.raises(AnvilError, match="anvil not found"):
        start_anvil(binary=tmp_path / "anvil")
    fake = tmp_path / "fake-anvil"
    fake.write_text("#!/bin/sh\necho 'error: bad flag' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(AnvilError, match=r"exited with code 3 during start-up:\nerror: bad flag"):
        start_anvil(binary=fake)
