"""`gpumesh watchtower` commands: `run` (the daemon: check submitted results, challenge wrong ones,
play the games to the end, withdraw) and `status` (what it checked and its games, from its state
file). Thin: builds the clients, stores and executor from the Settings and injects them into
gpumesh.node.watchtower; web3, torch and IPFS are imported inside the commands."""

from __future__ import annotations

from pathlib import Path

import typer

from gpumesh.client.cli.common import (
    ACCOUNT_OPT,
    CONFIRMATIONS_OPT,
    DEPLOYMENT_OPT,
    JSON_OPT,
    QUIET_OPT,
    RPC_OPT,
    VERBOSE_OPT,
    emit_json,
    parse_confirmations,
    print_table,
    unlock_signer,
)
from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import UsageError

app = typer.Typer(help="Watch submitted results, challenge wrong ones, win the dispute games.",
                  no_args_is_help=True)

STATE_OPT = typer.Option(None, "--state", help="State folder (default: <home>/watchtower/<network>).")
STATE_FILE = "watchtower.sqlite"


def _state_dir(state: str | None) -> Path:
    s = settings()
    return Path(state).expanduser() if state else s.home / "watchtower" / s.network.name


@app.command("run")
def run(
    sample_rate: float = typer.Option(1.0, "--sample-rate", help="Share of each job's units to re-execute, in (0, 1]."),
    state: str = STATE_OPT,
    metrics_port: int = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    device: str = typer.Option("cpu", "--device", help="Torch device for re-execution (cpu, cuda, cuda:1)."),
    interval: float = typer.Option(2.0, "--interval", min=0.05, help="Seconds between polls."),
    confirmations: str = CONFIRMATIONS_OPT,
    once: bool = typer.Option(False, "--once", help="Run until nothing is left to check or play, then exit."),
    verbose: bool = VERBOSE_OPT,
    quiet: bool = QUIET_OPT,
    request_data: bool = typer.Option(False, "--request-data",
                                      help="When a job's outputs are withheld, require one unit on-chain (a bonded "
                                           "data request: answered, it costs half the bond; unanswered, it slashes)."),
) -> None:
    """Run the watchtower until SIGTERM / Ctrl-C (state survives restarts: it resumes mid-dispute)."""
    import logging

    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.dispute import DisputeGameClient
    from gpumesh.client.chain.tx import NonceManager
    from gpumesh.ipfs.kubo import KuboStore
    from gpumesh.node.common.daemon import Daemon
    from gpumesh.node.common.logs import setup_daemon_logging
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.watchtower.tower import Watchtower, WatchtowerConfig

    confirms = parse_confirmations(confirmations)
    try:
        config = WatchtowerConfig(sample_rate=sample_rate, confirmations=confirms,
                                  request_data=request_data)
    except ValueError as exc:
        raise UsageError(f"--sample-rate: {exc}") from None
    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect(s.network.rpc_url, dep)
    signer = unlock_signer(account)
    setup_daemon_logging(verbose, quiet)
    log = logging.getLogger("gpumesh.watchtower")
    game = DisputeGameClient.with_account(w3, dep.dispute_game, signer, NonceManager(w3), from_block=dep.deploy_block)
    folder = _state_dir(state)
    metrics = None
    if metrics_port is not None:
        from gpumesh.node.watchtower.metrics import WatchtowerMetrics

        metrics = WatchtowerMetrics()
        metrics.serve(metrics_port)
        log.info("metrics on %s", metrics.url)

    def executor_factory(bundle):
        from gpumesh.node.runtime.executor import Executor

        return Executor(bundle, device)

    content = KuboStore(s.ipfs_api)
    store = StateStore(folder / STATE_FILE)
    tower = Watchtower(market=JobMarketClient(w3, dep.market), registry=WorkerRegistryClient(w3, dep.registry),
                       game=game, content=content, state=store, executor_factory=executor_factory,
                       config=config, from_block=dep.deploy_block, metrics=metrics, log=log)
    log.info("watchtower %s on chain %d (market %s, game %s), sample rate %g, state %s",
             signer.address, dep.chain_id, dep.market, dep.dispute_game, config.sample_rate, folder)
    def tick() -> None:
        try:
            tower.tick()
        except Exception:
            if metrics is not None:
                metrics.tick_errors.inc()
            raise  # the Daemon logs it and retries with backoff
        if once and not tower.busy():
            daemon.stop()

    daemon = Daemon("watchtower", tick, interval=interval, log=log)
    try:
        daemon.run_forever()  # SIGTERM / SIGINT: finish the current tick, then return
    finally:
        content.close()
        store.close()
    log.info("watchtower stopped")


@app.command("status")
def status(state: str = STATE_OPT, as_json: bool = JSON_OPT) -> None:
    """What the watchtower has checked and its dispute games (read from its state file)."""
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.watchtower.tower import status_of

    path = _state_dir(state) / STATE_FILE
    if not path.is_file():
        raise UsageError(f"no watchtower state at {path} (run `gpumesh watchtower run` first, or pass --state)")
    store = StateStore(path)
    try:
        st = status_of(store)
    finally:
        store.close()
    if as_json:
        emit_json(st)
        return
    rows = []
    for jid, r in sorted(st["jobs"].items()):
        chk = r.get("check") or {}
        found = r.get("line", r.get("reason", "")).split(": ", 1)[-1]
        rows.append((jid, r.get("status"), len(chk.get("checked", [])) or "-", found, r.get("game_id", "-")))
    print_table("jobs", ["job", "status", "units checked", "found", "game"], rows)
    print_table("games", ["game", "job", "status", "reason"],
                [(gid, g["job_id"], g["status"], g.get("reason", "-")) for gid, g in sorted(st["games"].items())])
    typer.echo(f"{st['transactions']} transaction(s) mined, {st['gas_used']} gas")
