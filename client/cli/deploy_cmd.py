"""`gpumesh deploy`: put the contracts on any EVM chain and write the deployment file every command
reads (docs/networks.md), or turn the broadcast record of a hand-run `forge script` into that file.
Thin glue over gpumesh.client.chain.deploy; heavy imports inside the commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gpumesh.client.cli.common import ACCOUNT_OPT, JSON_OPT, RPC_OPT, emit_json, parse_amount, parse_option
from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import ChainError, UsageError

app = typer.Typer(help="Deploy the contracts to a chain and write its deployment file.", no_args_is_help=True)

OUT_OPT = typer.Option(None, "--out", help="Deployment file to write (default: the network's, "
                       "$GPUMESH_HOME/deployments/NETWORK.json).")
FORCE_OPT = typer.Option(False, "--force", help="Replace an existing deployment file.")


@app.command("contracts")
def contracts(
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    unbonding_delay: str = typer.Option(None, "--unbonding-delay", help="Stake unbonding delay (7d default; "
                                        "90, 30m, 2h, 1d)."),
    game_clock: str = typer.Option(None, "--game-clock", help="Chess clock per side of a dispute (3.5 days "
                                   "default)."),
    min_bond: str = typer.Option(None, "--min-bond", help="Market floor of a job's dispute bond (0.01 ETH "
                                 "default; 0.01, 20gwei)."),
    out: str = OUT_OPT,
    force: bool = FORCE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Deploy WorkerRegistry, JobMarket, Int8Verifier and DisputeGame with contracts/script/Deploy.s.sol
    from an account (its key goes to forge in the environment, never in argv), then write the
    deployment file. Needs the source checkout (forge, the contracts)."""
    from gpumesh.client.chain.contracts import connect
    from gpumesh.client.chain.deploy import deploy
    from gpumesh.client.chain.types import parse_duration
    from gpumesh.client.cli.common import connect_hinted, unlock_signer

    s = settings().with_overrides(rpc_url=rpc_url)
    target = _target(out, force)
    delay = parse_option(parse_duration, unbonding_delay, "--unbonding-delay") if unbonding_delay else None
    clock = parse_option(parse_duration, game_clock, "--game-clock") if game_clock else None
    bond = parse_amount(min_bond, "--min-bond") if min_bond else None
    w3 = connect_hinted(s.network.rpc_url, None)
    chain_id = w3.eth.chain_id
    if s.network.chain_id is not None and chain_id != s.network.chain_id:
        raise ChainError(f"RPC at {s.network.rpc_url} serves chain {chain_id}, but network '{s.network.name}' "
                         f"expects {s.network.chain_id}")
    signer = unlock_signer(account)
    dep = deploy(s.network.rpc_url, signer.key.hex(), unbonding_delay=delay, game_clock=clock, min_bond=bond)
    connect(s.network.rpc_url, dep)  # the market has code where the record says
    _write(dep, target, as_json)


@app.command("from-broadcast")
def from_broadcast(
    record: Path = typer.Argument(..., help="forge's record of a Deploy.s.sol run: broadcast/Deploy.s.sol/"
                                  "CHAIN_ID/run-latest.json."),
    rpc_url: str = typer.Option(None, "--rpc-url", help="Also check on this RPC that the contracts exist "
                                "(and note it in the file)."),
    out: str = OUT_OPT,
    force: bool = FORCE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Write the deployment file from the broadcast record of `forge script contracts/script/Deploy.s.sol
    --broadcast` run by hand (docs/networks.md)."""
    from gpumesh.client.chain.contracts import connect
    from gpumesh.client.chain.deploy import parse_broadcast

    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {record}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{record} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{record} is not a forge broadcast record (not a JSON object)")
    target = _target(out, force)
    dep = parse_broadcast(data, rpc_url)
    if rpc_url:
        connect(rpc_url, dep)
    _write(dep, target, as_json)


def _target(out: str | None, force: bool) -> Path:
    path = Path(out).expanduser() if out else settings().deployment_file
    if path.exists() and not force:
        raise UsageError(f"{path} exists: pass --force to replace it, or --out another file")
    return path


def _write(dep, path: Path, as_json: bool) -> None:
    dep.save(path)
    if as_json:
        emit_json({"deployment_file": str(path), "chain_id": dep.chain_id, "addresses": dep.addresses,
                   "deploy_block": dep.deploy_block})
        return
    typer.echo(f"wrote {path} (chain {dep.chain_id}, from block {dep.deploy_block})")
    for name, addr in dep.addresses.items():
        typer.echo(f"  {name:<15} {addr}")
