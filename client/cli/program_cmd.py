"""`gpumesh program` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="program commands.", no_args_is_help=True)
