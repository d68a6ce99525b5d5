"""`gpumesh watchtower` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="watchtower commands.", no_args_is_help=True)
