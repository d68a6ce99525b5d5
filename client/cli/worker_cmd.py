"""`gpumesh worker` commands: stake, unstake, withdraw, info (the registry side of a worker).
Thin over gpumesh.client.chain; web3 is imported inside the commands."""

from __future__ import annotations

import typer

from gpumesh.client.cli.common import ACCOUNT_OPT, JSON_OPT, emit_json, print_table, resolve_account_name
from gpumesh.client.cli.job_cmd import DEPLOYMENT_OPT, RPC_OPT, chain_session
from gpumesh.client.core.errors import UsageError

app = typer.Typer(help="Worker stake in the registry.", no_args_is_help=True)


def _amount(text: str):
    from gpumesh.client.chain.types import parse_wei

    try:
        return parse_wei(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@app.command("stake")
def stake(
    amount: str = typer.Argument(..., help="Amount to add (1.5, 0.2eth, 20gwei, 10wei)."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add stake (free stake is what jobs can lock)."""
    from gpumesh.client.chain.types import format_eth

    wei = _amount(amount)
    cs = chain_session(rpc_url, deployment, account, write=True)
    res = cs.registry.stake(wei)
    total = res.event("Staked")["totalStake"]
    if as_json:
        emit_json({"staked_wei": wei, "total_wei": total, "tx": res.tx_hash})
    else:
        typer.echo(f"staked {format_eth(wei)}, total {format_eth(total)} (tx {res.tx_hash})")


@app.command("unstake")
def unstake(
    amount: str = typer.Argument(..., help="Free stake to start unbonding."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Start unbonding free stake; `worker withdraw` pays it after the unbonding delay."""
    from gpumesh.client.chain.types import format_eth

    wei = _amount(amount)
    cs = chain_session(rpc_url, deployment, account, write=True)
    res = cs.registry.request_unstake(wei)
    ev = res.event("UnstakeRequested")
    if as_json:
        emit_json({"unbonding_wei": ev["unbonding"], "ready_at": ev["readyAt"], "tx": res.tx_hash})
    else:
        typer.echo(f"unbonding {format_eth(ev['unbonding'])}, withdrawable from {ev['readyAt']} (tx {res.tx_hash})")


@app.command("withdraw")
def withdraw(
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Withdraw unbonded stake and registry credits (slash rewards)."""
    from gpumesh.client.chain.types import format_eth

    cs = chain_session(rpc_url, deployment, account, write=True)
    amount, res = cs.registry.withdraw()
    if as_json:
        emit_json({"amount_wei": amount, "tx": res.tx_hash})
    else:
        typer.echo(f"withdrew {format_eth(amount)} (tx {res.tx_hash})")


@app.command("info")
def info(
    address: str = typer.Argument(None, help="Worker address (default: the --account's)."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a worker's stake: total, free, locked, unbonding, credits."""
    from gpumesh.client.chain.types import format_eth

    cs = chain_session(rpc_url, deployment, None, write=False)
    if address is None:
        from gpumesh.client.cli.common import account_store

        address = account_store().address(resolve_account_name(account))
    try:
        si = cs.registry.info(address)
    except ValueError:
        raise UsageError(f"not an address: {address}") from None
    if as_json:
        emit_json(si.to_json())
        return
    print_table(f"worker {si.worker}", ["field", "value"], [
        ("total", format_eth(si.total)), ("free", format_eth(si.free)), ("locked", format_eth(si.locked)),
        ("unbonding", format_eth(si.unbonding)), ("unbonding ready at", si.unbonding_ready_at),
        ("credits", format_eth(si.credits)), ("capabilities", si.capabilities_cid or "-"),
    ])
