"""`gpumesh devnet up | down | status`: a local chain (anvil), an IPFS node and the contracts."""

from __future__ import annotations

import dataclasses

import typer

from gpumesh.client.cli.common import JSON_OPT, emit_json, parse_amount, print_table, resolve_address
from gpumesh.client.cli.context import settings

app = typer.Typer(help="Run a local devnet: anvil, an IPFS node and the deployed contracts.", no_args_is_help=True)


def _devnet_settings(anvil_port: int | None, ipfs_port: int | None):
    s = settings()
    dev = s.devnet
    if anvil_port is not None:
        dev = dataclasses.replace(dev, anvil_port=anvil_port)
    if ipfs_port is not None:
        dev = dataclasses.replace(dev, ipfs_port=ipfs_port)
    return dataclasses.replace(s, devnet=dev)


@app.command("up")
def up(
    anvil_port: int = typer.Option(None, "--anvil-port", help="anvil port (0 = any free port; default 8545)."),
    ipfs_port: int = typer.Option(None, "--ipfs-port", help="Embedded IPFS API port (0 = any free; default 5001)."),
    fresh: bool = typer.Option(False, "--fresh", help="Forget the saved chain state and deploy anew."),
    json_out: bool = JSON_OPT,
) -> None:
    """Start anvil and the IPFS node (unless --ipfs-api names a daemon), deploy, print the table."""
    from gpumesh.client.services import devnet

    s = _devnet_settings(anvil_port, ipfs_port)
    quiet = json_out

    def progress(msg: str) -> None:
        if not quiet:
            typer.echo(f"· {msg}", err=True)

    devnet.up(s, _deployer(), fresh=fresh, progress=progress)
    _print_status(devnet.status(s), json_out)


@app.command("down")
def down(json_out: bool = JSON_OPT) -> None:
    """Stop everything `devnet up` started (anvil saves its state first)."""
    from gpumesh.client.services import devnet

    stopped = devnet.down(settings())
    if json_out:
        emit_json({"stopped": stopped})
    elif stopped:
        typer.echo("stopped " + ", ".join(stopped))
    else:
        typer.echo("devnet was not running")


@app.command("status")
def status(json_out: bool = JSON_OPT) -> None:
    """Is the devnet up, and where are its parts."""
    from gpumesh.client.services import devnet

    st = devnet.status(settings())
    _print_status(st, json_out)
    if not st.up:
        raise typer.Exit(1)


@app.command("fund")
def fund(
    who: str = typer.Argument(..., help="0x address or account name to fund."),
    amount: str = typer.Option("10", "--amount", help="ETH to add (1.5, 0.2eth, 20gwei; a bare number is ETH)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Add ETH to an account on the local devnet (anvil only; on a real chain use `account send`)."""
    from gpumesh.client.chain.types import format_eth
    from gpumesh.client.services.funds import checked_address, fund_on_devnet
    from gpumesh.client.services.rpc import connect

    wei = parse_amount(amount, "--amount")
    w3 = connect(settings().network)
    address = checked_address(w3, resolve_address(who), "account")
    balance = fund_on_devnet(w3, address, wei)
    if json_out:
        emit_json({"account": who, "address": address, "added_wei": str(wei), "balance_wei": str(balance)})
    else:
        typer.echo(f"funded {who} {address} with {format_eth(wei)}: balance {format_eth(balance)}")


def _print_status(st, json_out: bool) -> None:
    if json_out:
        emit_json({
            "up": st.up,
            "anvil_alive": st.anvil_alive,
            "ipfs_alive": st.ipfs_alive,
            "block_number": st.block_number,
            "state": dataclasses.asdict(st.state) if st.state else None,
            "deployment": st.deployment,
        })
        return
    if st.state is None:
        typer.echo("devnet is down")
        return
    s = st.state
    rows = [
        ("status", "up" if st.up else "DEGRADED"),
        ("chain id", s.chain_id),
        ("RPC", f"{s.rpc_url} ({'alive' if st.anvil_alive else 'not answering'}, block {st.block_number})"),
        ("IPFS API", f"{s.ipfs_api} ({'embedded' if s.ipfs_pid else 'external'}, "
                     f"{'alive' if st.ipfs_alive else 'not answering'})"),
        ("deployment", s.deployment_file),
    ]
    dep = st.deployment or {}
    for name, addr in (dep.get("contracts") or dep.get("addresses") or {}).items():
        rows.append((name, addr))
    if "deploy_block" in dep:
        rows.append(("deploy block", dep["deploy_block"]))
    print_table("gpumesh devnet", ["", ""], rows)


def _deployer():
    def deploy(rpc_url: str, key: str):
        from gpumesh.client.chain.deploy import deploy as chain_deploy

        return chain_deploy(rpc_url, key)

    return deploy

