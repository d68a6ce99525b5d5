"""`gpumesh job` commands: post, status, list, cancel, and the single-step moves of the lifecycle
(claim, submit, finalize, expire, withdraw). Thin: parse options, call gpumesh.client.chain, print.
web3 is imported inside the commands (through `chain_session`), never at module level."""

from __future__ import annotations

import typer

from gpumesh.client.cli.common import (
    ACCOUNT_OPT,
    DEPLOYMENT_OPT,
    JSON_OPT,
    RPC_OPT,
    chain_session,
    emit_json,
    ipfs_store,
    parse_amount,
    parse_option,
    print_table,
    report_tx,
    withdraw_command,
)
from gpumesh.client.core.errors import UsageError

app = typer.Typer(help="Post jobs and follow them through their lifecycle.", no_args_is_help=True)

STATE_OPT = typer.Option(None, "--state", help="Only jobs in these states (open, claimed, ...).")


AMOUNTS = "Amounts: a bare number is ETH; suffixes eth, gwei, wei (0.1, 0.1eth, 20gwei, 1e17wei)."


@app.command("post", help=f"Post a job with its reward in escrow. Either --program DIR --inputs FILE (uploads both "
             f"to IPFS, computes every root, writes the job spec), or --spec-cid with the roots. {AMOUNTS}")
def post(
    program: str = typer.Option(None, "--program", help="Program folder (program.json + weights.safetensors)."),
    inputs: str = typer.Option(None, "--inputs", help="Inputs file (safetensors, one tensor `units`)."),
    spec_cid: str = typer.Option(None, "--spec-cid", help="Already published: IPFS CID of the job spec document."),
    program_root: str = typer.Option(None, "--program-root", help="With --spec-cid: 0x + 64 hex, the program root."),
    inputs_root: str = typer.Option(None, "--inputs-root", help="With --spec-cid: 0x + 64 hex, the inputs root."),
    units: int = typer.Option(None, "--units", min=1, help="Number of units (with --inputs: checked against the file)."),
    reward: str = typer.Option(..., "--reward", help="Reward held in escrow (0.5, 0.2eth, 20gwei, 1e17wei)."),
    stake: str = typer.Option(..., "--stake", help="Stake the worker must lock (same units as --reward)."),
    bond: str = typer.Option(..., "--bond", help="Bond a challenger posts per dispute game (same units)."),
    claim_deadline: str = typer.Option("1h", "--claim-deadline", help="Claim window from now (90, 30m, 2h, 1d)."),
    exec_time: str = typer.Option("1h", "--exec-time", help="Time from claim to the submit deadline."),
    challenge_window: str = typer.Option("1h", "--challenge-window", help="Time after submit to challenge."),
    min_gpu_mem: int = typer.Option(0, "--min-gpu-memory", "--min-gpu-mem", min=0,
                                    help="Minimum GPU memory in MiB (0: CPU is fine)."),
    class_names: str = typer.Option(None, "--class-names", help="Comma-separated names of the output classes, "
                                    "kept in the spec's meta (job result prints them)."),
    samples: int = typer.Option(None, "--samples", min=1, help="Real samples in the inputs (the last unit may be "
                                "zero-padded); kept in the spec's meta."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    from gpumesh.client.chain.types import JobSpec, parse_duration

    if program or inputs:
        if not (program and inputs):
            raise UsageError("--program and --inputs go together")
        if spec_cid or program_root or inputs_root:
            raise UsageError("--program/--inputs compute the spec and the roots: drop --spec-cid/--program-root/"
                             "--inputs-root")
    elif not (spec_cid and program_root and inputs_root and units):
        raise UsageError("give --program DIR --inputs FILE, or --spec-cid, --program-root, --inputs-root and --units")
    reward_wei = parse_amount(reward, "--reward")
    common = dict(required_stake=parse_amount(stake, "--stake"), dispute_bond=parse_amount(bond, "--bond"),
                  execution_time=parse_option(parse_duration, exec_time, "--exec-time"),
                  challenge_window=parse_option(parse_duration, challenge_window, "--challenge-window"),
                  min_gpu_memory_mib=min_gpu_mem)
    claim_in = parse_option(parse_duration, claim_deadline, "--claim-deadline")
    cs = chain_session(rpc_url, deployment, account, write=True)  # fail on the chain before uploading
    published = None
    if program:
        from gpumesh.node.jobs.publish import publish_job

        meta: dict = {}
        if class_names:
            meta["labels"] = [c.strip() for c in class_names.split(",")]
        if samples:
            meta["samples"] = samples
        store = ipfs_store()
        try:
            published = publish_job(store, program, inputs, units=units, min_gpu_memory_mib=min_gpu_mem, meta=meta)
        finally:
            store.close()
        d = published.spec
        spec_cid, program_root, inputs_root, units = published.spec_cid, d.program_root, d.inputs_root, d.num_units
    try:
        now = cs.w3.eth.get_block("latest")["timestamp"]  # chain time (a devnet may have travelled)
        spec = JobSpec(spec_cid=spec_cid, program_root=program_root, inputs_root=inputs_root, num_units=units,
                       claim_deadline=now + claim_in, **common)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    job_id, res = cs.market.post_job(spec, reward_wei)
    info = {"job_id": job_id, "spec_cid": spec_cid, "program_root": "0x" + spec.program_root.hex(),
            "inputs_root": "0x" + spec.inputs_root.hex(), "units": units}
    if published is not None:
        info.update(program_cid=published.spec.program_cid, inputs_cid=published.spec.inputs_cid)
    if published is not None and not as_json:
        typer.echo(f"program {published.spec.program_cid} (root {info['program_root']})")
        typer.echo(f"inputs  {published.spec.inputs_cid} (root {info['inputs_root']}, {units} units)")
        typer.echo(f"spec    {spec_cid}")
    report_tx(res, as_json, f"posted job {job_id}", **info)


@app.command("status")
def status(
    job_id: int = typer.Argument(..., min=1),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show one job."""
    from gpumesh.client.chain.types import format_eth

    cs = chain_session(rpc_url, deployment, None, write=False)
    j = cs.market.get_job(job_id)
    if as_json:
        emit_json(j.to_json())
        return
    rows = [("state", j.state.label), ("poster", j.poster), ("worker", j.worker), ("reward", format_eth(j.reward)),
            ("required stake", format_eth(j.required_stake)), ("dispute bond", format_eth(j.dispute_bond)),
            ("units", j.num_units), (_deadline_label(j), _when(j.deadline, cs.market.w3)),
            ("open disputes", j.open_disputes),
            ("program root", "0x" + j.program_root.hex()), ("inputs root", "0x" + j.inputs_root.hex()),
            ("result root", "0x" + j.result_root.hex())]
    print_table(f"job {job_id}", ["field", "value"], rows)


@app.command("list")
def list_jobs(
    state: list[str] = STATE_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """List jobs (all, or those in the given states)."""
    from gpumesh.client.chain.types import JobState, format_eth

    states = None
    if state:
        by_name = {s.name.lower(): s for s in JobState if s is not JobState.NONE}
        unknown = [x for x in state if x.lower() not in by_name]
        if unknown:
            raise UsageError(f"unknown state {unknown[0]!r} (one of {', '.join(by_name)})")
        states = {by_name[x.lower()] for x in state}
    cs = chain_session(rpc_url, deployment, None, write=False)
    jobs = cs.market.jobs(states)
    if as_json:
        emit_json([j.to_json() for j in jobs])
        return
    print_table("jobs", ["id", "state", "reward", "stake", "units", "deadline", "worker"],
                [(j.job_id, j.state.label, format_eth(j.reward), format_eth(j.required_stake), j.num_units,
                  _when(j.deadline, cs.market.w3), j.worker) for j in jobs])


def _deadline_label(j) -> str:
    """Which deadline Job.deadline is in this state (docs/protocol.md 4.2)."""
    return {"Open": "claim deadline", "Claimed": "execution deadline",
            "Submitted": "challenge deadline"}.get(j.state.label, "deadline")


def _when(ts: int, w3) -> str:
    """A chain timestamp as UTC time plus how far it is from the chain's latest block."""
    import datetime

    if not ts:
        return "-"
    now = int(w3.eth.get_block("latest")["timestamp"])
    at = datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = ts - now
    span = f"{abs(delta) // 3600}h{abs(delta) % 3600 // 60:02d}m" if abs(delta) >= 3600 else f"{abs(delta)}s"
    return f"{at} ({'in ' + span if delta > 0 else span + ' ago'})"


def _simple(verb: str, method: str):
    def command(
        job_id: int = typer.Argument(..., min=1),
        account: str = ACCOUNT_OPT,
        rpc_url: str = RPC_OPT,
        deployment: str = DEPLOYMENT_OPT,
        as_json: bool = JSON_OPT,
    ) -> None:
        cs = chain_session(rpc_url, deployment, account, write=True)
        report_tx(getattr(cs.market, method)(job_id), as_json, f"{verb} job {job_id}", job_id=job_id)

    return command


app.command("cancel", help="Cancel an Open job you posted; the reward is credited back (then `job withdraw`).")(
    _simple("cancelled", "cancel_job"))
app.command("claim", help="Claim an Open job as a worker (locks the required stake).")(_simple("claimed", "claim_job"))
app.command("finalize", help="Finalize a job after its challenge window (anyone).")(_simple("finalized", "finalize_job"))
app.command("expire", help="Expire a job whose claim or execution deadline passed (anyone).")(
    _simple("expired", "expire_job"))


@app.command("submit")
def submit(
    job_id: int = typer.Argument(..., min=1),
    result_root: str = typer.Option(..., "--result-root", help="0x + 64 hex: the result root."),
    outputs_cid: str = typer.Option(..., "--outputs-cid", help="IPFS CID of the outputs."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Submit the result commitment of a job you claimed."""
    try:
        root = bytes.fromhex(result_root.removeprefix("0x"))
    except ValueError:
        raise UsageError("--result-root is not hex") from None
    if len(root) != 32:
        raise UsageError(f"--result-root must be 32 bytes, got {len(root)}")
    cs = chain_session(rpc_url, deployment, account, write=True)
    report_tx(cs.market.submit_result(job_id, root, outputs_cid), as_json, f"submitted job {job_id}", job_id=job_id)


app.command("withdraw", help="Withdraw your market credits (rewards and refunds).")(withdraw_command("market"))


@app.command("request-data")
def request_data(
    job_id: int = typer.Argument(..., min=1),
    unit: int = typer.Option(..., "--unit", min=0, help="The unit whose output the worker must put on-chain."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Require the worker of a Submitted job to put one unit's output on-chain (a data-availability
    request, bonded with the job's dispute bond): answered, half the bond pays the worker's calldata
    and `job result` reads the unit from the chain; unanswered before its clock runs out, the worker
    is slashed (docs/protocol.md 5.8)."""
    from pathlib import Path

    from gpumesh.client.chain.contracts import connect
    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.dispute import DisputeGameClient
    from gpumesh.client.cli.common import unlock_signer
    from gpumesh.client.cli.context import settings

    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect(s.network.rpc_url, dep)
    job = chain_session(rpc_url, deployment, None, write=False).market.get_job(job_id)
    if not 0 <= unit < job.num_units:
        raise UsageError(f"--unit {unit}: job {job_id} has units 0..{job.num_units - 1}")
    game = DisputeGameClient.with_account(w3, dep.dispute_game, unlock_signer(account), from_block=dep.deploy_block)
    gid, res = game.request_data(job_id, unit, job.dispute_bond)
    report_tx(res, as_json, f"requested unit {unit} of job {job_id} on-chain (game {gid})", job_id=job_id, game_id=gid)


# ---------------------------------------------------------------- following a job and its result

_TERMINAL = ("FINALIZED", "CANCELLED", "EXPIRED", "SLASHED")


def _event_line(ev) -> str:
    skip = {"jobId", "gameId"}
    parts = []
    for k, v in ev.args.items():
        if k in skip:
            continue
        if isinstance(v, bytes | bytearray):
            v = "0x" + bytes(v).hex()
            v = v if len(v) <= 20 else v[:18] + "…"
        parts.append(f"{k}={v}")
    where = f"game {ev.args['gameId']} " if "gameId" in ev.args else ""
    return f"block {ev.block_number}: {where}{ev.name} " + " ".join(parts)


@app.command("watch")
def watch(
    job_id: int = typer.Argument(..., min=1),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between polls."),
    timeout: float = typer.Option(None, "--timeout", help="Stop after this many seconds (default: until the job ends)."),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (NDJSON)."),
) -> None:
    """Follow a job live: its events (and those of its dispute games) and state changes, until it
    is finalized, cancelled, expired or slashed."""
    import json
    import time

    from gpumesh.client.chain.events import EventReader, MemoryCursorStore

    cs = chain_session(rpc_url, deployment, None, write=False)
    contracts = [cs.market.contract]
    dep = cs.deployment
    if "DisputeGame" in dep.addresses and cs.w3.eth.get_code(dep.dispute_game):
        from gpumesh.client.chain.dispute import DisputeGameClient

        contracts.append(DisputeGameClient(cs.w3, dep.dispute_game).contract)
    reader = EventReader(cs.w3, contracts, MemoryCursorStore(), start_block=dep.deploy_block)
    games: set[int] = set()
    last_state = None
    t_end = None if timeout is None else time.monotonic() + timeout

    def out(kind: str, text: str, data: dict) -> None:
        if as_json:
            typer.echo(json.dumps({"kind": kind, "job_id": job_id, **data}, default=str))
        else:
            typer.echo(text)

    while True:
        for ev in reader.poll():
            mine = ev.args.get("jobId") == job_id
            if mine and "gameId" in ev.args:
                games.add(ev.args["gameId"])
            if mine or ev.args.get("gameId") in games:
                args = {k: ("0x" + bytes(v).hex() if isinstance(v, bytes | bytearray) else v)
                        for k, v in ev.args.items()}
                out("event", _event_line(ev), {"event": ev.name, "block": ev.block_number, "tx": ev.tx_hash,
                                               "args": args})
        reader.commit()
        j = cs.market.get_job(job_id)
        if j.state.name == "NONE":
            raise UsageError(f"job {job_id} does not exist")
        if j.state != last_state:
            last_state = j.state
            extra = f", {j.open_disputes} open dispute(s)" if j.open_disputes else ""
            out("state", f"state: {j.state.label} (deadline {j.deadline}{extra})",
                {"state": j.state.label, "deadline": j.deadline, "open_disputes": j.open_disputes})
        if j.state.name in _TERMINAL or (t_end is not None and time.monotonic() >= t_end):
            return
        time.sleep(interval)


@app.command("result")
def result(
    job_id: int = typer.Argument(..., min=1),
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder to write outputs.safetensors (and predictions.json)."),
    labels: str = typer.Option(None, "--labels", help="JSON list of the true label of each sample: prints accuracy."),
    show: int = typer.Option(20, "--show", min=0, help="Predictions to print (the file has them all)."),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Download a job's outputs, verify them against the ON-CHAIN result root, write them, and print
    the predictions (with the spec's class names, and accuracy against --labels)."""
    import json
    from pathlib import Path

    from gpumesh.node.jobs.results import accuracy, fetch_result

    truth = None
    if labels:
        try:
            truth = json.loads(Path(labels).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--labels {labels}: {exc}") from None
        if not isinstance(truth, list) or not all(isinstance(x, int) for x in truth):
            raise UsageError(f"--labels {labels}: want a JSON list of integers")
    cs = chain_session(rpc_url, deployment, None, write=False)
    job = cs.market.get_job(job_id)
    store = ipfs_store()
    try:
        from gpumesh.client.chain.dispute import DisputeGameClient

        game = DisputeGameClient(cs.w3, cs.deployment.dispute_game, from_block=cs.deployment.deploy_block)
        res = fetch_result(store, cs.market, job, cs.deployment.deploy_block, served=game.served_data)
    finally:
        store.close()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outputs.safetensors").write_bytes(res.raw)
    preds = res.predictions()
    names = res.label_names()
    (folder / "predictions.json").write_text(json.dumps([int(p) for p in preds]) + "\n")
    acc = accuracy(preds, truth) if truth is not None else None
    final = job.state.name == "FINALIZED"
    summary = {"job_id": job_id, "state": job.state.label, "result_root": "0x" + res.result_root.hex(),
               "outputs_cid": res.outputs_cid, "outputs_file": str(folder / "outputs.safetensors"),
               "samples": len(preds), "predictions": [int(p) for p in preds],
               "accuracy": None if acc is None else acc[0], "final": final}
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"outputs {res.outputs_cid} verified against the on-chain result root 0x{res.result_root.hex()}")
    if not final:
        typer.echo(f"note: the job is {job.state.label}; the result can still be challenged until {job.deadline}")
    rows = [(i, int(p), names[int(p)] if names and 0 <= int(p) < len(names) else "") +
            ((truth[i], "ok" if i < len(truth) and truth[i] == int(p) else "x") if truth and i < len(truth) else ())
            for i, p in enumerate(preds[:show])]
    cols = ["sample", "prediction", "label"] + (["truth", ""] if truth else [])
    print_table(f"job {job_id}: {len(preds)} predictions (first {min(show, len(preds))})", cols, rows)
    if acc is not None:
        typer.echo(f"accuracy {100 * acc[0]:.2f}% on {acc[1]} labelled samples")
    typer.echo(f"wrote {folder / 'outputs.safetensors'} and {folder / 'predictions.json'}")
