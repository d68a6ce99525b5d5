"""`gpumesh demo` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="demo commands.", no_args_is_help=True)
