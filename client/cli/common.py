"""Helpers shared by the command modules: JSON/table output, the password provider, the account
store and signer for the current Settings, the chain session (market + registry clients) and the
IPFS store of the configured network, option parsing into one-line usage errors, the report of a
sent transaction, and the `withdraw` command of a contract's credits. Heavy imports (web3, the
IPFS client) stay inside functions."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import AccountError, UsageError

T = TypeVar("T")

JSON_OPT = typer.Option(False, "--json", help="Print machine-readable JSON.")
ACCOUNT_OPT = typer.Option(None, "--account", "-a", help="Account name (keystore, or dev0..dev9 on the devnet).")
RPC_OPT = typer.Option(None, "--rpc-url", help="JSON-RPC URL (overrides the network profile).")
DEPLOYMENT_OPT = typer.Option(None, "--deployment", help="Deployment JSON file (default: the network's).")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(x) for x in r])
    Console().print(table)


def password_provider():
    """Password from GPUMESH_PASSWORD_FILE (first line) when set, else an interactive prompt."""
    s = settings()

    def provide(name: str, confirm: bool) -> str:
        if s.password_file is not None:
            try:
                return s.password_file.read_text(encoding="utf-8").splitlines()[0]
            except (OSError, IndexError):
                raise AccountError(f"cannot read a password from {s.password_file}") from None
        if not sys.stdin.isatty():
            raise AccountError(
                f"a password is needed for account '{name}': set GPUMESH_PASSWORD_FILE or run interactively"
            )
        return typer.prompt(f"Password for '{name}'", hide_input=True, confirmation_prompt=confirm)

    return provide


def account_store():
    from gpumesh.client.services.accounts import AccountStore

    s = settings()
    dev = s.devnet.accounts if s.network.name == "devnet" else 0
    return AccountStore(s.keystore_dir, dev_accounts=dev)


def resolve_account_name(name: str | None) -> str:
    name = name or settings().account
    if not name:
        raise AccountError("no account given: pass --account NAME or set GPUMESH_ACCOUNT")
    return name


def unlock_signer(name: str | None):
    """The LocalAccount for `name` (or the configured default)."""
    return account_store().unlock(resolve_account_name(name), password_provider())


@dataclass
class ChainSession:
    w3: Any
    deployment: Any
    market: Any  # JobMarketClient
    registry: Any  # WorkerRegistryClient
    address: str | None


def chain_session(rpc_url: str | None, deployment: str | None, account: str | None, write: bool) -> ChainSession:
    """Connect to the configured chain and open the market/registry clients (signing when `write`)."""
    from pathlib import Path

    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.tx import NonceManager

    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect(s.network.rpc_url, dep)
    if write:
        acct = unlock_signer(account)
        nonces = NonceManager(w3)
        market = JobMarketClient.with_account(w3, dep.market, acct, nonces)
        registry = WorkerRegistryClient.with_account(w3, dep.registry, acct, nonces)
        return ChainSession(w3, dep, market, registry, acct.address)
    return ChainSession(w3, dep, JobMarketClient(w3, dep.market), WorkerRegistryClient(w3, dep.registry), None)


def ipfs_store():
    """The IPFS store of the configured API (every read verified against its CID), checked
    reachable: an unreachable IPFS is one line now, before anything is uploaded or sent."""
    from gpumesh.ipfs.kubo import KuboStore

    store = KuboStore(settings().ipfs_api)
    try:
        store.version()
    except BaseException:
        store.close()
        raise
    return store


def parse_option(fn: Callable[[str], T], text: str, what: str | None = None) -> T:
    """`fn(text)`, a ValueError turned into a one-line usage error (prefixed with the option name)."""
    try:
        return fn(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}" if what else str(exc)) from None


def parse_amount(text: str, what: str | None = None) -> int:
    """An amount in wei from `1.5`, `0.2eth`, `20gwei`, `10wei` (a bare number is ETH)."""
    from gpumesh.client.chain.types import parse_wei

    return parse_option(parse_wei, text, what)


def report_tx(res, as_json: bool, line: str, **data: Any) -> None:
    """The outcome of one mined transaction: `data` plus tx/block/gas as JSON, or `line (tx, block, gas)`."""
    if as_json:
        emit_json({**data, "tx": res.tx_hash, "block": res.block_number, "gas_used": res.gas_used})
    else:
        typer.echo(f"{line} (tx {res.tx_hash}, block {res.block_number}, gas {res.gas_used})")


def withdraw_command(contract: str):
    """The `withdraw` command of the session's `contract` client (market or registry): withdraws
    every credit of the account and reports the amount."""

    def command(
        account: str = ACCOUNT_OPT,
        rpc_url: str = RPC_OPT,
        deployment: str = DEPLOYMENT_OPT,
        as_json: bool = JSON_OPT,
    ) -> None:
        from gpumesh.client.chain.types import format_eth

        cs = chain_session(rpc_url, deployment, account, write=True)
        amount, res = getattr(cs, contract).withdraw()
        report_tx(res, as_json, f"withdrew {format_eth(amount)}", amount_wei=amount)

    return command
