"""Deploying the contracts with contracts/script/Deploy.s.sol and the deployment file.

`deploy()` runs `forge script ... --broadcast` with the deployer key in the environment (never in
argv, so it does not show in `ps`), reads the broadcast record it wrote into a private temporary
folder, and returns a `Deployment`: the JSON file that every command reads to find the contracts.
`parse_broadcast()` turns the record of a `forge script ... --broadcast` run by hand
(broadcast/Deploy.s.sol/<chain id>/run-latest.json) into the same Deployment.
Imported by `gpumesh devnet up`, `gpumesh deploy` and tests.

The deployment file (docs/networks.md): {"version": 1, "chain_id": int, "addresses": {WorkerRegistry,
JobMarket, DisputeGame, Int8Verifier: 0x address}, "deploy_block": int (the first block to read events
from), "rpc_url": str or null (informational)}.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpumesh.client.core.errors import ChainError

SCRIPT = "contracts/script/Deploy.s.sol:Deploy"
CONTRACT_NAMES = ("WorkerRegistry", "JobMarket", "DisputeGame", "Int8Verifier")
FORMAT_VERSION = 1


class DeployError(ChainError):
    """forge failed, or its broadcast record is not what Deploy.s.sol writes."""


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on one chain."""

    chain_id: int
    addresses: dict[str, str] = field(default_factory=dict)  # contract name -> checksummed address
    deploy_block: int = 0
    rpc_url: str | None = None  # informational: where it was deployed

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise ChainError(f"the deployment has no {name} address (known: {', '.join(self.addresses)})") from None

    @property
    def market(self) -> str:
        return self.address("JobMarket")

    @property
    def registry(self) -> str:
        return self.address("WorkerRegistry")

    @property
    def dispute_game(self) -> str:
        return self.address("DisputeGame")

    def to_json(self) -> str:
        return json.dumps({"version": FORMAT_VERSION, "chain_id": self.chain_id, "addresses": self.addresses,
                           "deploy_block": self.deploy_block, "rpc_url": self.rpc_url}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if "version" not in d:
                raise ValueError(f'no "version" field (this gpumesh reads "version": {FORMAT_VERSION})')
            if d["version"] != FORMAT_VERSION:
                raise ValueError(f'unsupported "version": {d["version"]!r} (this gpumesh reads {FORMAT_VERSION})')
            missing = [k for k in ("chain_id", "addresses", "deploy_block") if k not in d]
            if missing:
                raise ValueError(f"missing field {missing[0]!r}")
            return cls(int(d["chain_id"]), dict(d["addresses"]), int(d["deploy_block"]), d.get("rpc_url"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"not a gpumesh deployment file: {exc}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ChainError(f"no deployment file at {path} (run `gpumesh devnet up` or pass --deployment)") from None
        return cls.from_json(text)


def repo_root() -> Path:
    """The checkout holding foundry.toml (the package is installed editable from it)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "foundry.toml").is_file():
            return parent
    raise DeployError("cannot find foundry.toml above the gpumesh package: deploying needs the source checkout")


def _forge(root: Path) -> str:
    cand = root / "node_modules" / ".bin" / "forge"
    return str(cand) if cand.exists() else "forge"


def deploy(
    rpc_url: str,
    deployer_key: str,
    unbonding_delay: int | None = None,
    game_clock: int | None = None,
    root: Path | None = None,
    min_bond: int | None = None,
    timeout: float = 600.0,
) -> Deployment:
    """Deploy registry, market, Int8Verifier and dispute game with Deploy.s.sol; returns the Deployment.

    `game_clock` is each side's chess-clock budget in seconds (default: Constants.GAME_CLOCK_SECONDS);
    `min_bond` the market's floor of a job's dispute bond in wei (default: Deploy.s.sol's).
    """
    root = root or repo_root()
    with tempfile.TemporaryDirectory(prefix="gpumesh-deploy-") as tmp:
        env = dict(os.environ)
        env["GPUMESH_DEPLOYER_KEY"] = deployer_key if deployer_key.startswith("0x") else "0x" + deployer_key
        if unbonding_delay is not None:
            env["GPUMESH_UNBONDING_DELAY"] = str(int(unbonding_delay))
        if game_clock is not None:
            env["GPUMESH_GAME_CLOCK"] = str(int(game_clock))
        if min_bond is not None:
            env["GPUMESH_MIN_BOND"] = str(int(min_bond))
        # A private broadcast folder: concurrent deploys to chains with the same id do not collide.
        env["FOUNDRY_BROADCAST"] = tmp
        cmd = [_forge(root), "script", SCRIPT, "--broadcast", "--rpc-url", rpc_url, "--skip", "test"]
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv; the key travels in env only
                cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise DeployError("forge not found: run `make npm`") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"forge script did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            why = next((ln.strip() for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
            tail = "\n".join(lines[-15:])
            raise DeployError(f"forge script failed (exit {proc.returncode}): {why}\n{tail}")
        records = list(Path(tmp).glob("Deploy.s.sol/*/run-latest.json"))
        if len(records) != 1:
            raise DeployError(f"expected one broadcast record, found {len(records)}")
        return parse_broadcast(json.loads(records[0].read_text(encoding="utf-8")), rpc_url)


def parse_broadcast(record: dict, rpc_url: str | None = None) -> Deployment:
    """A Deployment from a Deploy.s.sol broadcast record (its `returns` and receipts)."""
    from eth_utils import to_checksum_address

    try:
        returns = record["returns"]
        addresses = {
            "WorkerRegistry": to_checksum_address(returns["registry"]["value"]),
            "JobMarket": to_checksum_address(returns["market"]["value"]),
            "DisputeGame": to_checksum_address(returns["disputeGame"]["value"]),
            "Int8Verifier": to_checksum_address(returns["verifier"]["value"]),
        }
        chain_id = int(record["chain"])
        blocks = [int(r["blockNumber"], 16) for r in record.get("receipts", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"unexpected broadcast record: missing {exc}") from None
    if not blocks:
        raise DeployError("the broadcast record holds no receipts: nothing was deployed")
    return Deployment(chain_id, addresses, min(blocks), rpc_url)
