"""The local devnet: anvil + an IPFS node (the embedded one, or a Kubo daemon the user names) +
the deployed contracts, as detached daemons that outlive the CLI call.

State lives in <home>/devnet/state.json (pids, ports, URLs); anvil dumps its chain state to
<home>/devnet/anvil-state.json on shutdown and reloads it on the next `up`, so a devnet brought
down and up again keeps its accounts, jobs and deployment (use `fresh=True` to start over).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpumesh.client.core.errors import ClientError
from gpumesh.client.core.settings import DEVNET_CHAIN_ID, Settings
from gpumesh.client.services import procs
from gpumesh.client.services.accounts import dev_account


class DevnetError(ClientError):
    exit_code = 6


@dataclass(frozen=True)
class DevnetState:
    rpc_url: str
    chain_id: int
    anvil_pid: int
    anvil_port: int
    ipfs_api: str
    ipfs_pid: int | None  # None when an external Kubo daemon is used
    deployment_file: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> DevnetState:
        return DevnetState(**json.loads(text))


@dataclass(frozen=True)
class DevnetStatus:
    state: DevnetState | None
    anvil_alive: bool
    ipfs_alive: bool
    block_number: int | None
    deployment: dict[str, Any] | None

    @property
    def up(self) -> bool:
        return self.state is not None and self.anvil_alive and self.ipfs_alive


def _state_path(s: Settings) -> Path:
    return s.devnet_dir / "state.json"


def read_state(s: Settings) -> DevnetState | None:
    p = _state_path(s)
    if not p.exists():
        return None
    try:
        return DevnetState.from_json(p.read_text())
    except (ValueError, TypeError):
        raise DevnetError(f"devnet state file {p} is damaged: remove it after checking no devnet runs") from None


def _rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
        return json.loads(r.read())["result"]


def ipfs_api_url(api: str) -> str:
    """Multiaddr (/ip4/H/tcp/P) or URL -> http://H:P (gpumesh.ipfs.apiaddr reads it)."""
    from gpumesh.ipfs.apiaddr import parse_api

    return parse_api(api).url


def ipfs_reachable(api: str, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(ipfs_api_url(api) + "/api/v0/version", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def status(s: Settings) -> DevnetStatus:
    st = read_state(s)
    if st is None:
        return DevnetStatus(None, False, False, None, None)
    anvil_alive = procs.pid_alive(st.anvil_pid)
    block = None
    if anvil_alive:
        try:
            block = int(_rpc(st.rpc_url, "eth_blockNumber"), 16)
        except (OSError, ValueError, KeyError):
            anvil_alive = False
    ipfs_alive = ipfs_reachable(st.ipfs_api)
    dep = None
    try:
        dep = json.loads(Path(st.deployment_file).read_text())
    except (OSError, ValueError):
        pass
    return DevnetStatus(st, anvil_alive, ipfs_alive, block, dep)


Deployer = Callable[[str, str], Any]
"""(rpc_url, deployer private key hex) -> Deployment with .to_json()."""


def up(s: Settings, deployer: Deployer, fresh: bool = False, progress: Callable[[str], None] = print) -> DevnetState:
    current = read_state(s)
    if current is not None:
        if procs.pid_alive(current.anvil_pid) and (current.ipfs_pid is None or procs.pid_alive(current.ipfs_pid)):
            raise DevnetError(f"devnet is already up (anvil {current.rpc_url}, IPFS {current.ipfs_api}); "
                              "`gpumesh devnet down` first")
        # A previous devnet died (crash, reboot): clear what is left of it before starting again.
        _stop(current)
        _state_path(s).unlink(missing_ok=True)

    d = s.devnet_dir
    d.mkdir(parents=True, exist_ok=True)
    anvil_state = d / "anvil-state.json"
    if fresh:
        anvil_state.unlink(missing_ok=True)
        s.deployment_file.unlink(missing_ok=True)

    anvil_bin = procs.find_tool("anvil")
    if s.ipfs_external and not ipfs_reachable(s.ipfs_api):
        raise DevnetError(f"IPFS API at {ipfs_api_url(s.ipfs_api)} is unreachable")
    if not s.ipfs_external:
        # Check both ports before starting anything, so a busy port leaves nothing behind.
        ipfs_port = procs.choose_port(s.devnet.ipfs_port, "the IPFS API", "--ipfs-port / GPUMESH_IPFS_PORT")
    port = procs.choose_port(s.devnet.anvil_port, "anvil", "--anvil-port / GPUMESH_ANVIL_PORT")
    rpc_url = f"http://127.0.0.1:{port}"
    argv = [str(anvil_bin), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(DEVNET_CHAIN_ID),
            "--accounts", str(s.devnet.accounts), "--state", str(anvil_state), "--silent"]
    if s.devnet.block_time:
        argv += ["--block-time", str(s.devnet.block_time), "--mixed-mining"]
    progress(f"starting anvil on {rpc_url}")
    anvil_pid = procs.spawn_detached(argv, d / "anvil.log")
    ipfs_pid = None
    try:
        procs.wait_ready(lambda: _rpc(rpc_url, "eth_chainId") is not None, anvil_pid, "anvil", d / "anvil.log", 30)
        if s.ipfs_external:
            ipfs_api = s.ipfs_api
            progress(f"using the IPFS daemon at {ipfs_api}")
        else:
            ipfs_api = f"/ip4/127.0.0.1/tcp/{ipfs_port}"
            progress(f"starting the embedded IPFS node on {ipfs_api}")
            ipfs_argv = [sys.executable, "-m", "gpumesh.client.cli.main", "ipfs", "daemon",
                         "--api", ipfs_api, "--repo", str(d / "ipfs")]
            ipfs_pid = procs.spawn_detached(ipfs_argv, d / "ipfs.log")
            procs.wait_ready(lambda: ipfs_reachable(ipfs_api, 1.0), ipfs_pid, "the IPFS node", d / "ipfs.log", 30)
        if not _deployment_live(s.deployment_file, rpc_url):
            progress("deploying contracts")
            deployment = deployer(rpc_url, "0x" + dev_account(0).key.hex().removeprefix("0x"))
            s.deployment_file.parent.mkdir(parents=True, exist_ok=True)
            s.deployment_file.write_text(deployment.to_json())
        else:
            progress("contracts already deployed (state restored)")
    except BaseException:
        procs.stop_pid(anvil_pid)
        procs.stop_pid(ipfs_pid)
        raise
    state = DevnetState(rpc_url, DEVNET_CHAIN_ID, anvil_pid, port, ipfs_api, ipfs_pid,
                        str(s.deployment_file), time.time())
    _state_path(s).write_text(state.to_json())
    return state


def _deployment_live(path: Path, rpc_url: str) -> bool:
    """True when the deployment file's contracts have code on this chain (restored anvil state)."""
    try:
        dep = json.loads(path.read_text())
        addrs = [a for a in dep.get("contracts", dep.get("addresses", {})).values() if isinstance(a, str)]
    except (OSError, ValueError, AttributeError):
        return False
    if not addrs:
        return False
    try:
        return all(_rpc(rpc_url, "eth_getCode", [a, "latest"]) not in ("0x", None) for a in addrs)
    except (OSError, ValueError, KeyError):
        return False


def down(s: Settings) -> list[str]:
    st = read_state(s)
    if st is None:
        return []
    stopped = _stop(st)
    _state_path(s).unlink(missing_ok=True)
    return stopped


def _stop(st: DevnetState) -> list[str]:
    out = []
    if procs.stop_pid(st.ipfs_pid):
        out.append(f"IPFS node (pid {st.ipfs_pid})")
    if procs.stop_pid(st.anvil_pid):  # SIGTERM: anvil dumps its state file first
        out.append(f"anvil (pid {st.anvil_pid})")
    return out
