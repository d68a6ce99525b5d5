"""`gpumesh explorer`: `serve` (the local web page: jobs, workers, watchtowers, dispute games, live as
blocks arrive) and `show` (the same JSON as the page's API, on stdout). Read-only: no account, no
transaction. Thin: builds the Explorer (gpumesh.client.explorer.reader) from the Settings' chain,
deployment file and IPFS API and hands it to the server; web3 and IPFS are imported inside."""

from __future__ import annotations

import typer

from gpumesh.client.cli.common import (
    DEPLOYMENT_OPT,
    QUIET_OPT,
    RPC_OPT,
    VERBOSE_OPT,
    connect_hinted,
    emit_json,
)
from gpumesh.client.cli.context import settings

app = typer.Typer(help="Browse jobs, workers, watchtowers and dispute games in a local web page (read-only).",
                  no_args_is_help=True)

CONFIRMATIONS_OPT = typer.Option(0, "--confirmations", min=0, help="Blocks on top before an event is shown.")
NO_IPFS_OPT = typer.Option(False, "--no-ipfs", help="Do not read job specs and outputs from IPFS.")
KINDS = ("overview", "jobs", "job", "workers", "worker", "watchtowers", "watchtower", "games", "game")


def _explorer(rpc_url: str | None, deployment: str | None, confirmations: int, no_ipfs: bool,
              gateway: str | None = None, warn=None):
    from pathlib import Path

    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.explorer.reader import Explorer

    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect_hinted(s.network.rpc_url, dep)
    store = None
    if not no_ipfs:
        from gpumesh.client.cli.common import ipfs_store
        from gpumesh.client.core.errors import GpumeshError

        try:
            store = ipfs_store()
        except GpumeshError as exc:
            if warn is not None:
                warn(f"IPFS API {s.ipfs_api} not reachable ({str(exc).splitlines()[0]}); job specs and outputs "
                     f"links are left out (--ipfs-api to name another)")
    return Explorer(w3, dep, store, confirmations=confirmations, gateway=gateway, network=s.network.name)


@app.command("serve")
def serve(
    port: int = typer.Option(8780, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (the page is read-only; keep it local "
                                                          "unless you mean to publish it)."),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between reads of the chain head."),
    gateway: str = typer.Option(None, "--gateway", help="Link files to this IPFS gateway (e.g. https://ipfs.io) "
                                                         "instead of serving them through the IPFS API."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    confirmations: int = CONFIRMATIONS_OPT,
    no_ipfs: bool = NO_IPFS_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    verbose: bool = VERBOSE_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Serve the explorer page until Ctrl-C; it follows the chain and updates as blocks arrive."""
    from gpumesh.client.explorer.server import ExplorerServer
    from gpumesh.node.common.logs import setup_daemon_logging

    setup_daemon_logging(verbose, quiet)  # the daemons' one log format

    def warn(line: str) -> None:
        typer.echo(f"gpumesh: warning: {line}", err=True)

    ex = _explorer(rpc_url, deployment, confirmations, no_ipfs, gateway, warn)
    try:
        srv = ExplorerServer(ex, host, port, interval)
    except OSError as exc:
        from gpumesh.client.core.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try --port 0)") from None
    ov = ex.overview()
    typer.echo(f"explorer: chain {ov['chain_id']} ({ex.network}), market {ov['contracts']['market']}, "
               f"following from block {ov['deploy_block']}")
    typer.echo(f"explorer: open {srv.url}  (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(srv.url)
    try:
        srv.serve_until_interrupted()
    except KeyboardInterrupt:
        typer.echo("explorer: stopped")


@app.command("show")
def show(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}."),
    key: str = typer.Argument(None, help="Job or game id, or a worker/watchtower address."),
    state: str = typer.Option(None, "--state", help="jobs: only this state (open, claimed, submitted, ...)."),
    confirmations: int = CONFIRMATIONS_OPT,
    no_ipfs: bool = NO_IPFS_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
) -> None:
    """Print what the page shows as JSON (the API's answer): `show jobs`, `show game 1`, `show worker 0x…`."""
    from gpumesh.client.core.errors import UsageError
    from gpumesh.client.explorer.api import answer

    if kind not in KINDS:
        raise UsageError(f"explorer show: unknown kind {kind!r} (one of: {', '.join(KINDS)})")
    single = kind in ("job", "worker", "watchtower", "game")
    if single and not key:
        raise UsageError(f"explorer show {kind}: give the {'id' if kind in ('job', 'game') else 'address'}")
    if not single and key:
        raise UsageError(f"explorer show {kind} takes no id (use `show {kind.rstrip('s')} {key}`)")
    ex = _explorer(rpc_url, deployment, confirmations, no_ipfs)
    try:
        ex.sync()
        path = {"job": "jobs", "worker": "workers", "watchtower": "watchtowers", "game": "games"}.get(kind, kind)
        emit_json(answer(ex, f"/api/{path}" + (f"/{key}" if key else ""), {"state": state} if state else None))
    finally:
        if ex.store is not None:
            ex.store.close()
