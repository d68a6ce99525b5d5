"""`gpumesh devnet` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="devnet commands.", no_args_is_help=True)
