"""`gpumesh demo run`: the whole story on a throw-away embedded devnet (own home, free ports).

devnet up (anvil + embedded IPFS + contracts), then the story of gpumesh.node.demo.story (build a
program, an honest job paid and verified, a cheater caught and slashed; then the same for a text
generation job of the byte GPT), then a clean tear-down.
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
    devnet_only: bool = typer.Option(False, "--devnet-only", help="Only bring the devnet up and down."),
    json_out: Path = typer.Option(None, "--report", help="Also write the figures as JSON to this file."),
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
        state = devnet.up(s, _deployer(), fresh=True, progress=lambda m: typer.echo(f"· {m}"))
        _print_status(devnet.status(s), json_out=False)
        typer.echo(f"devnet ready in {time.perf_counter() - t0:.1f}s")
        if not devnet_only:
            _story(s, state, demo_home, json_out)
        typer.echo(f"demo finished in {time.perf_counter() - t0:.1f}s")
    finally:
        if not keep:
            stopped = devnet.down(s)
            typer.echo("torn down: " + (", ".join(stopped) or "nothing was running"))
            if home is None:
                shutil.rmtree(demo_home, ignore_errors=True)


def _story(s, state, demo_home: Path, report_path: Path | None) -> None:
    import json

    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.node.demo.story import DemoConfig, run_story

    cfg = DemoConfig(rpc_url=state.rpc_url, deployment=Deployment.load(Path(state.deployment_file)),
                     ipfs_api=state.ipfs_api, work=demo_home / "work")
    cfg.work.mkdir(parents=True, exist_ok=True)
    report = run_story(cfg, typer.echo)
    d = report.dispute
    typer.echo("\n== summary")
    typer.echo(f"  int8 program: float {report.float_accuracy:.2%} -> int8 {report.int8_accuracy:.2%} on held-out digits")
    typer.echo(f"  honest job {report.honest_job}: paid; poster-verified accuracy {report.honest_accuracy:.2%}")
    typer.echo(f"  cheating job {report.cheat_job}: {d.outcome} ({d.reason}); {d.moves_worker + d.moves_challenger} "
               f"moves, {d.gas_total:,} gas, {d.wall_seconds:.1f}s of dispute wall time")
    g, gd = report.generation, report.generation.dispute
    typer.echo(f"  generation job {g.honest_job}: paid; {len(g.honest_texts)} prompts' text verified against the "
               f"on-chain result root ({g.ops:,} ops, {g.generate} bytes each)")
    typer.echo(f"  generation cheating job {g.cheat_job}: {gd.outcome} ({gd.reason}) at {gd.op_name} element "
               f"{gd.element}; {gd.moves_worker + gd.moves_challenger} moves, {gd.gas_total:,} gas, one-step "
               f"{gd.gas_step:,}")
    typer.echo("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()))
    if report_path is not None:
        import dataclasses

        report_path.write_text(json.dumps(dataclasses.asdict(report), indent=2, default=str))
