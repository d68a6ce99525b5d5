"""Builds Settings from defaults < config file < GPUMESH_* environment < flags.

The only place that reads os.environ and the config file; everything below receives Settings.
Environment variables (all optional):
  GPUMESH_HOME, GPUMESH_CONFIG, GPUMESH_NETWORK, GPUMESH_RPC_URL, GPUMESH_CHAIN_ID,
  GPUMESH_DEPLOYMENT, GPUMESH_IPFS_API, GPUMESH_ACCOUNT, GPUMESH_PASSWORD_FILE,
  GPUMESH_FOUNDRY_KEYSTORES (default ~/.foundry/keystores), GPUMESH_ANVIL_PORT, GPUMESH_IPFS_PORT,
  GPUMESH_WORKER_<KEY> for each key of the [worker] table (GPUMESH_WORKER_SAFETY_FACTOR=5, ...)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpumesh.client.core.errors import ConfigError
from gpumesh.client.core.settings import (
    DEFAULT_IPFS_API,
    DEFAULT_RPC_URL,
    DEVNET_CHAIN_ID,
    DevnetSettings,
    NetworkProfile,
    Settings,
    WorkerSettings,
)

ENV_PREFIX = "GPUMESH_"
_TOP_KEYS = {"network", "ipfs_api", "account", "password_file", "foundry_keystores", "networks", "devnet", "worker"}
_NET_KEYS = {"rpc_url", "chain_id", "deployment"}
_DEVNET_KEYS = {"anvil_port", "ipfs_port", "block_time", "accounts"}
#: [worker] keys (the acceptance policy, docs/roles/worker.md) and the type each value must have.
_WORKER_KEYS: dict[str, type] = {"min_reward": str, "max_stake_ratio": float, "max_defence_gas": int,
                                 "gas_price": str, "safety_factor": float, "time_margin": float}


def load_settings(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env

    home = Path(flags.get("home") or env.get("GPUMESH_HOME") or Path.home() / ".gpumesh").expanduser()
    config_path = Path(flags.get("config") or env.get("GPUMESH_CONFIG") or home / "config.toml").expanduser()
    explicit_config = bool(flags.get("config") or env.get("GPUMESH_CONFIG"))
    cfg = _read_config(config_path, required=explicit_config)

    network_name = flags.get("network") or env.get("GPUMESH_NETWORK") or cfg.get("network") or "devnet"
    nets = cfg.get("networks", {})
    if not isinstance(nets, dict):
        raise ConfigError(f"{config_path}: 'networks' must be a table")
    if network_name != "devnet" and network_name not in nets:
        raise ConfigError(f"unknown network profile '{network_name}' (config file {config_path} names: "
                          f"{', '.join(sorted(nets)) or 'none'})")
    net_cfg = nets.get(network_name, {})
    _check_keys(net_cfg, _NET_KEYS, f"{config_path}: [networks.{network_name}]")

    # A running devnet (gpumesh devnet up, possibly on other ports) is found through its state file.
    devnet_state = _devnet_state(home) if network_name == "devnet" else {}
    rpc_url = (flags.get("rpc_url") or env.get("GPUMESH_RPC_URL") or net_cfg.get("rpc_url")
               or devnet_state.get("rpc_url") or DEFAULT_RPC_URL)
    chain_id = _first(_int(env.get("GPUMESH_CHAIN_ID"), "GPUMESH_CHAIN_ID"), net_cfg.get("chain_id"))
    if chain_id is None and network_name == "devnet":
        chain_id = DEVNET_CHAIN_ID
    deployment = flags.get("deployment") or env.get("GPUMESH_DEPLOYMENT") or net_cfg.get("deployment")

    ipfs_named = flags.get("ipfs_api") or env.get("GPUMESH_IPFS_API") or cfg.get("ipfs_api")
    dev_cfg = cfg.get("devnet", {})
    _check_keys(dev_cfg, _DEVNET_KEYS, f"{config_path}: [devnet]")
    devnet = DevnetSettings(
        anvil_port=_first(_int(env.get("GPUMESH_ANVIL_PORT"), "GPUMESH_ANVIL_PORT"), dev_cfg.get("anvil_port"), 8545),
        ipfs_port=_first(_int(env.get("GPUMESH_IPFS_PORT"), "GPUMESH_IPFS_PORT"), dev_cfg.get("ipfs_port"), 5001),
        block_time=dev_cfg.get("block_time", 1),
        accounts=dev_cfg.get("accounts", 10),
    )
    worker = _worker_settings(cfg.get("worker", {}), env, f"{config_path}: [worker]")
    pw = flags.get("password_file") or env.get("GPUMESH_PASSWORD_FILE") or cfg.get("password_file")
    foundry = (env.get("GPUMESH_FOUNDRY_KEYSTORES") or cfg.get("foundry_keystores")
               or Path.home() / ".foundry" / "keystores")
    return Settings(
        home=home,
        network=NetworkProfile(
            name=network_name,
            rpc_url=str(rpc_url),
            chain_id=int(chain_id) if chain_id is not None else None,
            deployment=Path(deployment).expanduser() if deployment else None,
        ),
        ipfs_api=str(ipfs_named or devnet_state.get("ipfs_api") or DEFAULT_IPFS_API),
        ipfs_external=bool(ipfs_named),
        account=flags.get("account") or env.get("GPUMESH_ACCOUNT") or cfg.get("account"),
        password_file=Path(pw).expanduser() if pw else None,
        foundry_keystores=Path(foundry).expanduser(),
        devnet=devnet,
        worker=worker,
        config_file=config_path if config_path.exists() else None,
    )


def _worker_settings(table: Any, env: Mapping[str, str], where: str) -> WorkerSettings:
    """The [worker] table, each key overridden by its GPUMESH_WORKER_<KEY> variable."""
    _check_keys(table, set(_WORKER_KEYS), where)
    values: dict[str, Any] = {}
    for key, typ in _WORKER_KEYS.items():
        name = ENV_PREFIX + "WORKER_" + key.upper()
        raw, src = (env[name], name) if env.get(name) else (table.get(key), f"{where} {key}")
        if raw is not None:
            values[key] = _typed(raw, typ, src)
    return WorkerSettings(**values)


def _typed(raw: Any, typ: type, src: str) -> Any:
    if typ is str:
        return str(raw)
    try:
        if isinstance(raw, bool):
            raise ValueError
        return int(raw, 0) if typ is int and isinstance(raw, str) else typ(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{src} must be {'an integer' if typ is int else 'a number'}, got {raw!r}") from None


def _devnet_state(home: Path) -> dict[str, Any]:
    """rpc_url / ipfs_api of the devnet `gpumesh devnet up` started under this home, if any."""
    try:
        import json

        state = json.loads((home / "devnet" / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _read_config(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    _check_keys(data, _TOP_KEYS, f"config file {path}")
    return data


def _check_keys(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got '{value}'") from None


def _first(*values: Any) -> Any:
    """The first value that is not None (0 is a real value: 'any free port')."""
    return next((v for v in values if v is not None), None)
