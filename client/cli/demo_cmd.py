"""`gpumesh demo run`: the whole story on a throw-away embedded devnet (own home, free ports).

Today: devnet up (anvil + embedded IPFS + contracts), the deployment shown, clean tear-down.
The market, runtime and dispute stages plug into `gpumesh.client.services.demo` as they land.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import typer

from gpumesh.client.cli.context import settings

app = typer.Typer(help="Run the end-to-end demo on a throw-away local devnet.", no_args_is_help=True)


@app.command("run")
def run(
    keep: bool = typer.Option(False, "--keep", help="Leave the devnet up and its home folder in place."),
    home: Path = typer.Option(None, "--demo-home", help="Folder for the demo's devnet (default: a temp dir)."),
) -> None:
    """Bring a devnet up, run the story, tear everything down."""
    from gpumesh.client.cli.devnet_cmd import _deployer, _print_status
    from gpumesh.client.services import devnet

    base = settings()
    demo_home = home or Path(tempfile.mkdtemp(prefix="gpumesh-demo-"))
    s = dataclasses.replace(
        base,
        home=demo_home,
        network=dataclasses.replace(base.network, name="devnet", deployment=None),
        devnet=dataclasses.replace(base.devnet, anvil_port=0, ipfs_port=0),
    )
    t0 = time.perf_counter()
    typer.echo(f"gpumesh demo — devnet home {demo_home}")
    try:
        devnet.up(s, _deployer(), fresh=True, progress=lambda m: typer.echo(f"· {m}"))
        _print_status(devnet.status(s), json_out=False)
        typer.echo(f"devnet ready in {time.perf_counter() - t0:.1f}s")
    finally:
        if not keep:
            stopped = devnet.down(s)
            typer.echo("torn down: " + (", ".join(stopped) or "nothing was running"))
            if home is None:
                shutil.rmtree(demo_home, ignore_errors=True)
