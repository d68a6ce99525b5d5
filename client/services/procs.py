"""Child processes for the devnet: finding toolchain binaries, choosing ports (with
gpumesh.client.chain.anvil's free_port / port_is_free), spawning detached daemons with a log file,
waiting for readiness, and stopping them so that nothing is left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from gpumesh.client.chain.anvil import free_port, port_is_free
from gpumesh.client.core.errors import ClientError

REPO_ROOT = Path(__file__).resolve().parents[2]


class ProcessError(ClientError):
    exit_code = 6


def find_tool(name: str, override: str | None = None) -> Path:
    """A Foundry binary: an explicit override, the project's npm-installed native binary (not the
    node_modules/.bin launcher, which does not wait for the tool on SIGTERM), the launcher, then PATH."""
    from gpumesh.client.chain.anvil import foundry_binary

    candidates = [override] if override else []
    candidates += [foundry_binary(REPO_ROOT / "node_modules", name), shutil.which(name)]
    for c in candidates:
        if c and Path(c).exists() and os.access(c, os.X_OK):
            return Path(c)
    raise ProcessError(f"{name} not found: run `make setup` (npm ci installs Foundry) or put {name} on PATH")


def choose_port(wanted: int, what: str, hint: str) -> int:
    if wanted == 0:
        return free_port()
    if not port_is_free(wanted):
        raise ProcessError(f"port {wanted} for {what} is busy: stop what uses it or choose another ({hint})")
    return wanted


def spawn_detached(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in its own session (survives this CLI process), output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never from job data
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    return proc.pid


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        # A zombie child of ours counts as dead.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_ready(check: Callable[[], bool], pid: int, what: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise ProcessError(f"{what} exited during start-up: {last_line(log_path)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.1)
    stop_pid(pid)
    raise ProcessError(f"{what} did not become ready within {timeout:.0f}s: {last_line(log_path)}")


def stop_pid(pid: int | None, grace: float = 10.0) -> bool:
    """SIGTERM the process group, then SIGKILL after `grace` seconds. True when something was stopped."""
    if not pid_alive(pid):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return not pid_alive(pid)


def last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(no output)"
