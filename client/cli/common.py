"""Helpers shared by the command modules: JSON/table output, the password provider, the account
store and signer for the current Settings. Heavy imports stay inside functions."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer

from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import AccountError

JSON_OPT = typer.Option(False, "--json", help="Print machine-readable JSON.")
ACCOUNT_OPT = typer.Option(None, "--account", "-a", help="Account name (keystore, or dev0..dev9 on the devnet).")


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
