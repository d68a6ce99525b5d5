"""`gpumesh worker` commands: stake, unstake, withdraw, info (the registry side of a worker), and
`run` (the worker daemon, gpumesh.node.worker), `status` (its jobs and refusals, from its state
file) and `doctor` (inventory + self-test).
Thin over gpumesh.client.chain and gpumesh.node.worker; heavy imports stay inside the commands."""

from __future__ import annotations

import typer

from gpumesh.client.cli.common import (
    ACCOUNT_OPT,
    CONFIRMATIONS_OPT,
    DEPLOYMENT_OPT,
    JSON_OPT,
    QUIET_OPT,
    RPC_OPT,
    VERBOSE_OPT,
    chain_session,
    emit_json,
    ipfs_store,
    parse_amount,
    parse_confirmations,
    print_table,
    report_tx,
    require_funds,
    resolve_account_name,
    unlock_signer,
    withdraw_command,
)
from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import UsageError

app = typer.Typer(help="Run a worker, check its machine, and manage its stake.", no_args_is_help=True)


def _registry_tx(method: str, amount: str, account, rpc_url, deployment):
    """Parse `amount` (wei), then send the registry's `method(amount)` from the account: (wei, TxResult)."""
    wei = parse_amount(amount)
    cs = chain_session(rpc_url, deployment, account, write=True)
    if method == "stake":  # the stake is sent with the call: refuse a short balance in one line first
        require_funds(cs.w3, cs.address, account, wei, 200_000, "staking sends the stake with the call")
    return wei, getattr(cs.registry, method)(wei)


@app.command("stake")
def stake(
    amount: str = typer.Argument(..., help="Amount to add (1.5, 0.2eth, 20gwei, 10wei)."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add stake (free stake is what jobs can lock)."""
    from gpumesh.client.chain.types import format_eth

    wei, res = _registry_tx("stake", amount, account, rpc_url, deployment)
    total = res.event("Staked")["totalStake"]
    report_tx(res, as_json, f"staked {format_eth(wei)}, total {format_eth(total)}", staked_wei=wei, total_wei=total)


@app.command("unstake")
def unstake(
    amount: str = typer.Argument(..., help="Free stake to start unbonding."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Start unbonding free stake; `worker withdraw` pays it after the unbonding delay."""
    from gpumesh.client.chain.types import format_eth

    _, res = _registry_tx("request_unstake", amount, account, rpc_url, deployment)
    ev = res.event("UnstakeRequested")
    report_tx(res, as_json, f"unbonding {format_eth(ev['unbonding'])}, withdrawable from {ev['readyAt']}",
              unbonding_wei=ev["unbonding"], ready_at=ev["readyAt"])


app.command("withdraw", help="Withdraw unbonded stake and registry credits (slash rewards).")(
    withdraw_command("registry"))


@app.command("info")
def info(
    address: str = typer.Argument(None, help="Worker address (default: the --account's)."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a worker's stake: total, free, locked, unbonding, credits."""
    from gpumesh.client.chain.types import format_eth

    cs = chain_session(rpc_url, deployment, None, write=False)
    if address is None:
        from gpumesh.client.cli.common import account_store

        address = account_store().address(resolve_account_name(account))
    try:
        si = cs.registry.info(address)
    except ValueError:
        raise UsageError(f"not an address: {address}") from None
    if as_json:
        emit_json(si.to_json())
        return
    print_table(f"worker {si.worker}", ["field", "value"], [
        ("total", format_eth(si.total)), ("free", format_eth(si.free)), ("locked", format_eth(si.locked)),
        ("unbonding", format_eth(si.unbonding)), ("unbonding ready at", si.unbonding_ready_at),
        ("credits", format_eth(si.credits)), ("capabilities", si.capabilities_cid or "-"),
    ])


# ---------------------------------------------------------------- the daemon and its doctor


def _check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available to torch on this machine")


def _state_dir(state: str | None, address):
    """--state, else <home>/worker/<network>/<address()>."""
    from pathlib import Path

    if state:
        return Path(state).expanduser()
    s = settings()
    return s.home / "worker" / s.network.name / address()


def _gas_price(text: str) -> int:
    """Wei per gas from `30gwei`, `1e9wei`, or a bare number of gwei."""
    from gpumesh.client.cli.common import parse_amount

    t = text.strip().lower()
    return parse_amount(t if t.endswith(("wei", "eth")) else t + "gwei", "--gas-price")


def _policy(min_reward, max_stake_ratio, max_defence_gas, gas_price, safety_factor, time_margin):
    """The acceptance policy from the flags, else the [worker] config keys / GPUMESH_WORKER_*
    variables, else gpumesh.node.worker.policy.Policy's defaults."""
    from dataclasses import fields

    from gpumesh.node.worker.policy import Policy

    flags = dict(min_reward=min_reward, max_stake_ratio=max_stake_ratio, max_defence_gas=max_defence_gas,
                 gas_price=gas_price, safety_factor=safety_factor, time_margin=time_margin)
    conf = settings().worker
    chosen = {f.name: flags[f.name] if flags[f.name] is not None else getattr(conf, f.name) for f in fields(Policy)}
    kw = {k: v for k, v in chosen.items() if v is not None}
    if "min_reward" in kw:
        kw["min_reward"] = parse_amount(str(kw["min_reward"]), "--min-reward")
    if "gas_price" in kw:
        kw["gas_price"] = _gas_price(str(kw["gas_price"]))
    try:
        return Policy(**kw)
    except ValueError as exc:
        raise UsageError(f"worker policy: {exc}") from None


@app.command("run")
def run(
    min_reward: str = typer.Option(None, "--min-reward", help="Skip jobs paying less (0.01, 0.01eth, 20gwei, "
                                   "1e15wei; a bare number is ETH). Default 0, or [worker] min_reward."),
    max_stake_ratio: float = typer.Option(None, "--max-stake-ratio", help="Skip jobs whose required stake is over "
                                          "this many times the reward (default 100)."),
    max_defence_gas: int = typer.Option(None, "--max-defence-gas", min=0, help="Gas of the worker's side of a whole "
                                        "dispute game: skip jobs whose bond, less the burned half, pays less than "
                                        "this at the gas price (default 1000000)."),
    gas_price: str = typer.Option(None, "--gas-price", help="Gas price for the bond rule (30gwei; a bare number is "
                                  "gwei). Default: the node's eth_gasPrice when a job is considered."),
    safety_factor: float = typer.Option(None, "--safety-factor", help="Skip jobs whose executionTime is under this "
                                        "many times the run time measured on this machine, plus the margin "
                                        "(default 3, at least 1)."),
    time_margin: float = typer.Option(None, "--time-margin", help="Seconds added to the scaled estimate for the "
                                      "claim/submit transactions and the upload (default 60)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    state: str = typer.Option(None, "--state", help="State folder (SQLite; default <home>/worker/<network>/<address>)."),
    metrics_port: int = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port "
                                     "(127.0.0.1)."),
    interval: float = typer.Option(1.0, "--interval", min=0.01, help="Seconds between polls of the chain."),
    chunk_units: int = typer.Option(None, "--chunk-units", min=1, help="Units per execution step, stored in one "
                                    "transaction, so a restart resumes after the last step (default: as many as the "
                                    "executor runs in one pass)."),
    max_active: int = typer.Option(1, "--max-active", min=1, help="Jobs claimed and not yet submitted at once."),
    confirmations: str = CONFIRMATIONS_OPT,
    trace_cache_mib: int = typer.Option(64, "--trace-cache-mib", min=0, help="Memory for the op outputs a dispute "
                                        "defence recomputes (a disputed unit needs at most one execution's memory "
                                        "plus this; 0 recomputes every time)."),
    corrupt: str = typer.Option(None, "--corrupt", help="TEST TOOL, makes this worker a CHEATER that will be "
                                "slashed: flip one bit (+-64) of element E of op OP's output in unit U, as UNIT:OP:ELEMENT "
                                "(OP an index or name, negative counts from the end)."),
    unit_delay: float = typer.Option(0.0, "--unit-delay", min=0.0, help="TEST TOOL: sleep this many seconds after "
                                     "each unit (to kill a worker mid-job in tests and demos)."),
    verbose: bool = VERBOSE_OPT,
    quiet: bool = QUIET_OPT,
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
) -> None:
    """Run the worker: publish capabilities, take jobs, execute, submit, get paid, defend disputes.

    Stops cleanly on SIGTERM / Ctrl-C (the current unit finishes); a restart resumes every job from its stored state."""
    import sys
    from pathlib import Path

    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.types import format_eth
    from gpumesh.node.common.logs import setup_daemon_logging
    from gpumesh.node.worker.app import build_worker
    from gpumesh.node.worker.faults import Fault
    from gpumesh.node.worker.node import WorkerConfig
    from gpumesh.node.worker.progress import LogProgress, RichProgress

    confirms = parse_confirmations(confirmations)  # bad input: one line before anything starts
    setup_daemon_logging(verbose, quiet)
    policy = _policy(min_reward, max_stake_ratio, max_defence_gas, gas_price, safety_factor, time_margin)
    fault = Fault.parse(corrupt) if corrupt else None
    _check_device(device)
    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    acct = unlock_signer(account)
    state_dir = _state_dir(state, lambda: acct.address)
    metrics = None
    if metrics_port is not None:
        from gpumesh.node.worker.metrics import WorkerMetrics

        metrics = WorkerMetrics()
        metrics_url = metrics.serve(metrics_port)
    store = ipfs_store()  # unreachable IPFS: one line now, not a retry loop later
    progress = RichProgress() if sys.stderr.isatty() else LogProgress()
    cfg = WorkerConfig(policy=policy, device=device, chunk_units=chunk_units, max_active=max_active,
                       trace_cache_bytes=trace_cache_mib << 20, fault=fault, unit_delay=unit_delay,
                       confirmations=confirms)
    wapp = build_worker(rpc_url=s.network.rpc_url, deployment=dep, account=acct, store=store, state_dir=state_dir,
                        config=cfg, progress=progress, metrics=metrics, interval=interval)
    if fault is not None:
        wapp.node.log.warning("TEST TOOL --corrupt %s: this worker will submit WRONG results and be slashed", corrupt)
    wapp.node.log.info("state in %s; IPFS %s", state_dir, store.api_url)
    if metrics is not None:
        wapp.node.log.info("metrics on %s", metrics_url)
    wapp.node.log.info("acceptance policy: minimum reward %s, stake <= %gx reward, bond pays >= %d gas at %s, "
                       "executionTime >= %g x estimate + %gs", format_eth(policy.min_reward), policy.max_stake_ratio,
                       policy.max_defence_gas, "the node's gas price" if policy.gas_price is None
                       else f"{policy.gas_price} wei", policy.safety_factor, policy.time_margin)
    try:
        wapp.daemon.run_forever()
    finally:
        wapp.close()
        store.close()
        if metrics is not None:
            metrics.close()
    typer.echo("worker stopped")


@app.command("status")
def status(
    state: str = typer.Option(None, "--state", help="State folder (default <home>/worker/<network>/<address>)."),
    account: str = ACCOUNT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """The worker's jobs (status, why skipped) and its refusals per reason, read from its state file."""
    from gpumesh.node.worker.app import STATE_FILE
    from gpumesh.node.worker.status import status_at

    def address() -> str:
        from gpumesh.client.cli.common import account_store

        return account_store().address(resolve_account_name(account))

    path = _state_dir(state, address) / STATE_FILE
    if not path.is_file():
        raise UsageError(f"no worker state at {path} (run `gpumesh worker run` first, or pass --state)")
    st = status_at(path)
    if as_json:
        emit_json(st)
        return
    print_table("jobs", ["job", "status", "refusal", "reason"],
                [(jid, r["status"], r.get("refusal", "-"), r.get("reason", "-")) for jid, r in sorted(st["jobs"].items())])
    typer.echo("refusals: " + (", ".join(f"{k} {n}" for k, n in sorted(st["refusals"].items())) or "none"))
    cap = st["capabilities"]
    gpus = ", ".join(f"{g['name']} ({g['memory_mib']} MiB)" for g in cap.get("gpus", [])) or "none"
    typer.echo(f"capabilities: device {cap.get('device', '?')}, GPUs {gpus}" + "".join(
        f"; program {root[:10]}… {t['units_per_second']:.3g} units/s" for root, t in cap["throughput"].items()))


@app.command("doctor")
def doctor(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda: the device the self-test runs on."),
    examples: str = typer.Option(None, "--examples", help="examples/digits folder (default: the checkout's)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Hardware inventory (NVML GPUs, or the CPU) and a self-test: the digits example must give its
    recorded result root on this machine, bit for bit."""
    from pathlib import Path

    from gpumesh.node.worker.inventory import inventory
    from gpumesh.node.worker.selftest import runtime_info, self_test

    _check_device(device)
    inv = inventory()
    st = self_test(device, Path(examples) if examples else None)
    rt = runtime_info(device)
    if as_json:
        emit_json({"inventory": inv.to_dict(), "runtime": rt, "self_test": st.to_json()})
    else:
        rows = [(f"GPU {g.index}", f"{g.name}, {g.memory_mib} MiB, driver {g.driver}, CC {g.compute_capability}")
                for g in inv.gpus]
        if not inv.gpus:
            rows.append(("GPU", f"none ({inv.nvml_error})"))
        c = inv.cpu
        rows.append(("CPU", f"{c.model}, {c.logical_cores} cores, {c.memory_mib} MiB, {c.machine}"))
        rows.append(("runtime", ", ".join(f"{k} {v}" for k, v in rt.items())))
        rows.append(("self-test", ("PASS: " if st.ok else "FAIL: ") + st.message))
        if st.result_root is not None:
            rows.append(("result root", f"0x{st.result_root.hex()} ({st.units} units, {st.seconds:.2f}s)"))
        print_table("worker doctor", ["check", "result"], rows)
    if not st.ok:
        raise typer.Exit(1)


@app.command("check")
def check(
    job_id: int = typer.Argument(..., min=1),
    max_inputs_mib: int = typer.Option(1024, "--max-inputs-mib", min=0, help="Refuse inputs files larger than this."),
    max_weights_mib: int = typer.Option(1024, "--max-weights-mib", min=0, help="Refuse weights files larger than this."),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Validate a job's data as the worker does before claiming (spec, program and inputs fetched
    from IPFS, every root checked against the chain), without claiming it."""
    from gpumesh.node.jobs.fetch import JobLimits, fetch_job, spec_cid_of

    cs = chain_session(rpc_url, deployment, None, write=False)
    job = cs.market.get_job(job_id)
    if job.state.name == "NONE":
        raise UsageError(f"job {job_id} does not exist")
    store = ipfs_store()
    try:
        limits = JobLimits(max_inputs_bytes=max_inputs_mib << 20, max_weights_bytes=max_weights_mib << 20)
        data = fetch_job(store, job, spec_cid_of(cs.market, job_id, cs.deployment.deploy_block), limits)
    finally:
        store.close()
    info = {"job_id": job_id, "ok": True, "program_cid": data.spec.program_cid, "inputs_cid": data.spec.inputs_cid,
            "program_root": "0x" + job.program_root.hex(), "inputs_root": "0x" + job.inputs_root.hex(),
            "units": len(data.units), "ops": len(data.bundle.program.ops)}
    if as_json:
        emit_json(info)
    else:
        typer.echo(f"job {job_id}: data OK: program {info['program_cid']} ({info['ops']} ops) and inputs "
                   f"{info['inputs_cid']} ({info['units']} units) match the on-chain roots")
