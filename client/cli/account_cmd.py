"""`gpumesh account`: encrypted keystores and the devnet's dev accounts. Keys are never printed."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpumesh.client.cli.common import (
    ACCOUNT_OPT,
    JSON_OPT,
    PASSWORD_FILE_OPT,
    account_store,
    emit_json,
    parse_amount,
    password_provider,
    print_table,
    resolve_account_name,
    resolve_address,
    unlock_signer,
    use_password_file,
)
from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import AccountError

app = typer.Typer(help="Create, import and inspect accounts (encrypted keystores).", no_args_is_help=True)


@app.command("new")
def new(
    name: str = typer.Argument(..., help="Name of the new account."),
    password_file: str = PASSWORD_FILE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Create a new key in an encrypted keystore (password from --password-file, GPUMESH_PASSWORD_FILE
    or a prompt)."""
    use_password_file(password_file)
    info = account_store().new(name, password_provider())
    _show(info, json_out)


@app.command("import")
def import_(
    name: str = typer.Argument(..., help="Name for the imported account."),
    key_file: Path = typer.Option(None, "--key-file", help="File holding the hex private key (else prompt)."),
    password_file: str = PASSWORD_FILE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Import a private key into an encrypted keystore. The key is read, never echoed."""
    use_password_file(password_file)
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AccountError(f"cannot read key file {key_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        key = typer.prompt("Private key (hex)", hide_input=True)
    else:
        key = sys.stdin.readline().strip()
    info = account_store().import_key(name, key, password_provider())
    _show(info, json_out)


@app.command("list")
def list_(json_out: bool = JSON_OPT) -> None:
    """List accounts: gpumesh keystores, Foundry's (~/.foundry/keystores) and, on the devnet profile,
    the funded dev accounts. A Foundry keystore stores no address: `account balance NAME` unlocks it."""
    accts = account_store().list()
    if json_out:
        emit_json([{"name": a.name, "address": a.address, "kind": a.kind} for a in accts])
        return
    print_table("accounts", ["name", "address", "kind"],
                [(a.name, a.address or "(not stored; unlock to see)", a.kind) for a in accts])


@app.command("balance")
def balance(
    who: str = typer.Argument(None, help="Account name or 0x address (default: the configured account)."),
    password_file: str = PASSWORD_FILE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Balance of an account on the configured network (JSON: exact wei and ETH as decimal strings)."""
    from gpumesh.client.services.rpc import connect

    use_password_file(password_file)
    s = settings()
    who = who or s.account
    if not who:
        raise AccountError("no account given: pass a name or address, or set GPUMESH_ACCOUNT")
    address = resolve_address(who)
    w3 = connect(s.network)
    wei = w3.eth.get_balance(w3.to_checksum_address(address))
    if json_out:
        emit_json({"account": who, "address": address, "wei": str(wei), "eth": eth_decimal(wei)})
    else:
        print(f"{who} {address} {eth_decimal(wei)} ETH")


@app.command("send")
def send(
    to: str = typer.Option(..., "--to", help="Recipient: 0x address or account name."),
    amount: str = typer.Option(..., "--amount", help="How much (1.5, 0.2eth, 20gwei, 10wei; a bare number is ETH)."),
    account: str = ACCOUNT_OPT,
    password_file: str = PASSWORD_FILE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Send ETH from an account to an address or account, on any chain (the balance is checked
    against the amount plus gas first)."""
    use_password_file(password_file)
    from gpumesh.client.chain.types import format_eth
    from gpumesh.client.services.funds import checked_address, send_eth
    from gpumesh.client.services.rpc import connect

    wei = parse_amount(amount, "--amount")
    w3 = connect(settings().network)
    dest = checked_address(w3, resolve_address(to, "--to"), "--to")
    sender = unlock_signer(account)
    res = send_eth(w3, sender, dest, wei)
    if json_out:
        emit_json({"from": sender.address, "to": dest, "wei": str(wei), "tx": res.tx_hash, "block": res.block_number,
                   "gas_used": res.gas_used})
    else:
        print(f"sent {format_eth(wei)} from {resolve_account_name(account)} {sender.address} to {dest} "
              f"(tx {res.tx_hash}, block {res.block_number}, gas {res.gas_used})")


def eth_decimal(wei: int) -> str:
    """Wei as an exact decimal string of ETH ('1.5', '0.000000000000000001', '0'): no float, no rounding."""
    whole, frac = divmod(int(wei), 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".")


def _show(info, json_out: bool) -> None:
    if json_out:
        emit_json({"name": info.name, "address": info.address, "keystore": str(info.path)})
    else:
        print(f"account '{info.name}' {info.address} (keystore {info.path})")
