"""The one Settings object, built at the entry point and passed down (pure: no I/O here).

Precedence: defaults < config file ($GPUMESH_HOME/config.toml) < GPUMESH_* environment < flags.
The loader that reads files and the environment lives in gpumesh.client.cli.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_IPFS_API = "/ip4/127.0.0.1/tcp/5001"
DEVNET_CHAIN_ID = 31337


@dataclass(frozen=True)
class NetworkProfile:
    """Where the chain is: an RPC URL, the chain id it must answer, and the deployment file."""

    name: str
    rpc_url: str = DEFAULT_RPC_URL
    chain_id: int | None = None
    deployment: Path | None = None  # None -> <home>/deployments/<name>.json


@dataclass(frozen=True)
class DevnetSettings:
    anvil_port: int = 8545  # 0 = any free port
    ipfs_port: int = 5001  # 0 = any free port
    # Seconds between interval-mined blocks, ON TOP of mining every transaction at once (anvil's
    # mixed mining): block timestamps keep advancing on an idle devnet, so deadlines pass as on a
    # real chain. 0 = mine only on transactions.
    block_time: int = 1
    accounts: int = 10


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's acceptance policy as configured ([worker] table, GPUMESH_WORKER_* variables);
    None = not set here (a `gpumesh worker run` flag, else gpumesh.node.worker.policy.Policy's default).
    Amounts stay text until the CLI parses them (a bare min_reward is ETH, a bare gas_price gwei)."""

    min_reward: str | None = None
    max_stake_ratio: float | None = None
    max_defence_gas: int | None = None
    gas_price: str | None = None
    safety_factor: float | None = None
    time_margin: float | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    network: NetworkProfile
    ipfs_api: str = DEFAULT_IPFS_API
    ipfs_external: bool = False  # True when the user named an IPFS API: devnet then starts none
    account: str | None = None
    password_file: Path | None = None
    foundry_keystores: Path | None = None  # Foundry's keystore folder (cast wallet): its names are accounts too
    devnet: DevnetSettings = field(default_factory=DevnetSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    config_file: Path | None = None

    @property
    def keystore_dir(self) -> Path:
        return self.home / "keystores"

    @property
    def devnet_dir(self) -> Path:
        return self.home / "devnet"

    @property
    def deployment_file(self) -> Path:
        return self.network.deployment or (self.home / "deployments" / f"{self.network.name}.json")

    def with_overrides(self, **kw: Any) -> Settings:
        """A copy with command-level flags applied (None values are ignored)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        net_keys = {f.name for f in fields(NetworkProfile)} - {"name"}
        net_kw = {k: kw.pop(k) for k in list(kw) if k in net_keys}
        out = replace(self, **kw) if kw else self
        if net_kw:
            out = replace(out, network=replace(out.network, **net_kw))
        return out
