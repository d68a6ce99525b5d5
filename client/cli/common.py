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
ACCOUNT_OPT = typer.Option(None, "--account", "-a", help="Account: a name (gpumesh or Foundry keystore, dev0..dev9 "
                           "on the devnet) or a keystore file's path.")
PASSWORD_FILE_OPT = typer.Option(None, "--password-file", help="File whose first line is the keystore password "
                                 "(else GPUMESH_PASSWORD_FILE, else a prompt).")
RPC_OPT = typer.Option(None, "--rpc-url", help="JSON-RPC URL: http(s):// or ws(s):// (new heads by subscription); "
                       "overrides the network profile.")
VERBOSE_OPT = typer.Option(False, "--verbose", "-v", help="Debug lines too.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="Warnings and errors only.")
CONFIRMATIONS_OPT = typer.Option("0", "--confirmations", help="Act on an event only once this many blocks are on "
                                 "top of it, or once its block is 'safe' or 'finalized' (chains with finality).")


def parse_confirmations(text: str) -> int | str:
    """`--confirmations`: a number of blocks (>= 0), or the block tag `safe` / `finalized`."""
    t = text.strip().lower()
    if t in ("safe", "finalized"):
        return t
    try:
        n = int(t)
    except ValueError:
        n = -1
    if n < 0:
        raise UsageError(f"--confirmations: {text!r} is not a number of blocks (0 or more), 'safe' or 'finalized'")
    return n
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


def use_password_file(path: str | None) -> None:
    """A command's own --password-file flag: overrides the Settings' for this invocation."""
    from pathlib import Path

    from gpumesh.client.cli.context import cli_state

    if path is not None:
        cli_state._settings = settings().with_overrides(password_file=Path(path).expanduser())


def password_provider():
    """Password from --password-file / GPUMESH_PASSWORD_FILE (first line) when set, else a prompt."""
    s = settings()

    def provide(name: str, confirm: bool) -> str:
        if s.password_file is not None:
            try:
                return s.password_file.read_text(encoding="utf-8").splitlines()[0]
            except (OSError, IndexError):
                raise AccountError(f"cannot read a password from {s.password_file}") from None
        if not sys.stdin.isatty():
            raise AccountError(
                f"a password is needed for account '{name}': pass --password-file FILE (or set "
                "GPUMESH_PASSWORD_FILE) or run interactively"
            )
        return typer.prompt(f"Password for '{name}'", hide_input=True, confirmation_prompt=confirm)

    return provide


def account_store():
    from gpumesh.client.services.accounts import AccountStore

    s = settings()
    dev = s.devnet.accounts if s.network.name == "devnet" else 0
    return AccountStore(s.keystore_dir, dev_accounts=dev, foundry_dir=s.foundry_keystores,
                        password=password_provider())


def resolve_account_name(name: str | None) -> str:
    name = name or settings().account
    if not name:
        raise AccountError("no account given: pass --account NAME or set GPUMESH_ACCOUNT")
    return name


def resolve_address(who: str, what: str = "account") -> str:
    """A 0x address as given, or the address of account `who` (keystore or dev account)."""
    if who.startswith("0x"):
        if len(who) != 42:
            raise UsageError(f"{what} {who}: not an address (0x + 40 hex)")
        return who
    return account_store().address(who)


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

    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient
    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.tx import NonceManager

    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect_hinted(s.network.rpc_url, dep)
    if write:
        acct = unlock_signer(account)
        nonces = NonceManager(w3)
        market = JobMarketClient.with_account(w3, dep.market, acct, nonces)
        registry = WorkerRegistryClient.with_account(w3, dep.registry, acct, nonces)
        return ChainSession(w3, dep, market, registry, acct.address)
    return ChainSession(w3, dep, JobMarketClient(w3, dep.market), WorkerRegistryClient(w3, dep.registry), None)


def connect_hinted(rpc_url: str, deployment):
    """gpumesh.client.chain's connect, an unreachable RPC's error ending with what to do about it."""
    from gpumesh.client.chain.contracts import connect
    from gpumesh.client.core.errors import ChainError
    from gpumesh.client.services.rpc import unreachable_hint

    try:
        return connect(rpc_url, deployment)
    except ChainError as exc:
        if "unreachable" not in str(exc):
            raise
        raise ChainError(f"{exc}{unreachable_hint(rpc_url)}") from None


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
    """An amount in wei from `1.5`, `0.2eth`, `20gwei`, `10wei` (a bare number is ETH); errors speak
    in the unit the user typed."""
    from gpumesh.client.chain.types import parse_wei

    pre = f"{what}: " if what else ""
    if text.strip().startswith("-"):
        raise UsageError(f"{pre}{text.strip()} is negative; amounts are 0 or more (1.5, 0.2eth, 20gwei, 10wei)")
    try:
        return parse_wei(text)
    except ValueError as exc:
        if "whole" in str(exc):  # finer than one wei
            raise UsageError(f"{pre}{text.strip()} is finer than 1 wei (1 wei = 1e-18 ETH = 1e-9 gwei)") from None
        raise UsageError(f"{pre}{exc}") from None


def require_funds(w3, address: str, account: str | None, amount: int, gas: int, what: str) -> None:
    """Refuse, before anything is uploaded or sent, when `address` cannot pay `amount` plus `gas` at
    the node's current fees: one line with the balance, what is missing and how to fund it."""
    import math

    from gpumesh.client.chain.types import format_eth
    from gpumesh.client.services.funds import max_fee

    fee = max_fee(w3)
    need, have = amount + gas * fee, int(w3.eth.get_balance(address))
    if have >= need:
        return
    name = account or settings().account or address
    top_up = f"{math.ceil((need - have) / 10**15) / 1000:g}"  # ETH, rounded up to 0.001
    how = (f"`gpumesh devnet fund {name} --amount {top_up}`" if settings().network.name == "devnet"
           else f"`gpumesh account send --to {address} --amount {top_up}` from a funded account")
    raise AccountError(f"{name} ({address}) holds {format_eth(have)}, but {what}: {format_eth(amount)} plus up to "
                       f"{format_eth(gas * fee)} gas; {format_eth(need - have)} missing (fund it with {how})")


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
