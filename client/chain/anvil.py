"""Start and stop a local anvil node (the devnet chain and every chain test).

`start_anvil()` finds the anvil binary (explicit path, GPUMESH-independent: node_modules/.bin next to
the repository, then PATH), binds 127.0.0.1 on the given or a free port, waits until it answers
eth_chainId, and returns an `AnvilProcess` whose `stop()` leaves no process behind. Imported by the
devnet command, tests and fixtures.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from threading import Thread

from gpumesh.client.core.errors import ChainError

DEFAULT_CHAIN_ID = 31337


class AnvilError(ChainError):
    """anvil could not be found, started, or reached."""


def native_foundry_binary(node_modules: Path, name: str) -> Path | None:
    """The platform binary npm installed for Foundry tool `name` (@foundry-rs/<name>-<platform>/bin/
    <name>), or None. Preferred over node_modules/.bin/<name>, a Node.js launcher that, on SIGTERM,
    forwards the signal and exits at once: whoever waits for the launcher would not wait for anvil
    (still writing its state dump, or still running)."""
    for cand in sorted((node_modules / "@foundry-rs").glob(f"{name}-*/bin/{name}")):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def foundry_binary(node_modules: Path, name: str) -> Path | None:
    """Foundry tool `name` from an npm node_modules folder: the native binary (above), else the
    node_modules/.bin launcher; None when neither is there. The one search order of find_anvil and
    services.procs.find_tool."""
    native = native_foundry_binary(node_modules, name)
    if native is not None:
        return native
    launcher = node_modules / ".bin" / name
    return launcher if launcher.is_file() and os.access(launcher, os.X_OK) else None


def find_anvil(explicit: str | Path | None = None) -> Path:
    """The anvil binary: `explicit`, else the npm-installed native anvil above this package (else its
    node_modules/.bin launcher), else PATH."""
    if explicit:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise AnvilError(f"anvil not found at {p}")
    for parent in Path(__file__).resolve().parents:
        found = foundry_binary(parent / "node_modules", "anvil")
        if found is not None:
            return found
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise AnvilError("anvil not found: run `make npm` (node_modules/.bin/anvil) or put anvil on PATH")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the one helper for anvil, the devnet and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound now (in use or not permitted: False; any other error is raised)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """One raw JSON-RPC call (used before web3 is worth building, and for anvil_/evm_ methods)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local http URL we built
        out = json.loads(resp.read())
    if "error" in out:
        raise AnvilError(f"{method} failed: {out['error'].get('message', out['error'])}")
    return out["result"]


class AnvilProcess:
    """A running anvil. Use as a context manager or call stop()."""

    def __init__(self, proc: subprocess.Popen, port: int, chain_id: int, output: deque[str]) -> None:
        self._proc = proc
        self.port = port
        self.chain_id = chain_id
        self._output = output

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def output_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._output)[-lines:])

    def rpc(self, method: str, params: list | None = None):
        return rpc_call(self.url, method, params, timeout=10.0)

    def increase_time(self, seconds: int, mine: bool = True) -> None:
        """Move the chain clock forward (evm_increaseTime) and mine a block so it takes effect."""
        self.rpc("evm_increaseTime", [int(seconds)])
        if mine:
            self.rpc("evm_mine", [])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate anvil and wait for it; kill if it does not stop. Idempotent."""
        if self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=timeout)

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(
    port: int | None = None,
    state_dir: Path | None = None,
    block_time: int | None = None,
    accounts: int = 10,
    chain_id: int = DEFAULT_CHAIN_ID,
    binary: str | Path | None = None,
    startup_timeout: float = 30.0,
) -> AnvilProcess:
    """Start anvil on 127.0.0.1:`port` (a free port when None) and wait until it answers.

    `state_dir`: anvil dumps its state there on exit and loads it on start (a devnet that survives
    restarts). `block_time`: seconds per block; None mines one block per transaction.
    """
    exe = find_anvil(binary)
    if port is None or port == 0:
        port = free_port()
    elif not port_is_free(port):
        raise AnvilError(f"port {port} on 127.0.0.1 is already in use (is another devnet running?)")
    args = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--accounts", str(accounts),
            "--chain-id", str(chain_id)]
    if block_time:
        args += ["--block-time", str(block_time)]
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        args += ["--state", str(state_dir / "anvil-state.json")]
    output: deque[str] = deque(maxlen=200)
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        cwd=tempfile.gettempdir(), start_new_session=True,
    )
    Thread(target=_drain, args=(proc, output), daemon=True).start()
    anvil = AnvilProcess(proc, port, chain_id, output)
    wait_until_answers(anvil, "anvil", startup_timeout)
    return anvil


def wait_until_answers(node: AnvilProcess, what: str, startup_timeout: float) -> None:
    """Wait until the freshly started `node` answers eth_chainId with its chain id; stop it and
    raise AnvilError (with its output's tail) when it exits, stays silent or is another chain."""
    proc = node._proc
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            time.sleep(0.1)  # let the drain thread collect the last lines
            raise AnvilError(f"{what} exited with code {proc.returncode} during start-up:\n{node.output_tail()}")
        try:
            got = int(rpc_call(node.url, "eth_chainId", timeout=1.0), 16)
            break
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            node.stop()
            raise AnvilError(f"{what} did not answer on {node.url} within {startup_timeout:.0f}s:\n{node.output_tail()}")
        time.sleep(0.05)
    if got != node.chain_id:
        node.stop()
        raise AnvilError(f"{what} on {node.url} reports chain id {got}, expected {node.chain_id}")


def _drain(proc: subprocess.Popen, sink: deque[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line.rstrip("\n"))
