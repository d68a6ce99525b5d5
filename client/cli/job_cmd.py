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
    require_funds,
    withdraw_command,
)
from gpumesh.client.core.errors import UsageError, ValidationError

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
    shards: int = typer.Option(None, "--shards", min=1, help="Split the units into N shards, each claimed by its own "
                               "worker with its own stake, result, disputes and payout (one transaction posts all)."),
    units_per_shard: int = typer.Option(None, "--units-per-shard", min=1, help="Shards of M units each (the last "
                                        "one the rest), instead of --shards."),
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
    sharded = shards is not None or units_per_shard is not None
    if sharded and not program:
        raise UsageError("--shards/--units-per-shard split the units of --program/--inputs (not a --spec-cid job)")
    if shards is not None and units_per_shard is not None:
        raise UsageError("give --shards N or --units-per-shard M, not both")
    if spec_cid and (samples or class_names):
        raise UsageError("--samples/--class-names go into the spec that --program/--inputs write; "
                         "with --spec-cid put them in your spec's meta")
    reward_wei = parse_amount(reward, "--reward")
    if reward_wei == 0:
        raise UsageError("--reward: must be more than 0 (it is what the worker earns)")
    common = dict(required_stake=parse_amount(stake, "--stake"), dispute_bond=parse_amount(bond, "--bond"),
                  execution_time=parse_option(parse_duration, exec_time, "--exec-time"),
                  challenge_window=parse_option(parse_duration, challenge_window, "--challenge-window"),
                  min_gpu_memory_mib=min_gpu_mem)
    claim_in = parse_option(parse_duration, claim_deadline, "--claim-deadline")
    meta: dict = {}
    if program:  # the local files first: nothing is read from the chain or uploaded for a bad input
        meta = _post_meta(program, inputs, units, samples, class_names)
    if sharded:
        _post_sharded(program, inputs, meta, shards, units_per_shard, reward_wei, common, claim_in,
                      account, rpc_url, deployment, as_json)
        return
    cs = chain_session(rpc_url, deployment, account, write=True)  # fail on the chain before uploading
    _check_against_chain(cs, reward_wei, claim_in=claim_in, **common)
    require_funds(cs.w3, cs.address, account, reward_wei, POST_GAS, "posting this job escrows the reward")
    published = None
    if program:
        from gpumesh.node.jobs.publish import publish_job

        store = ipfs_store()
        try:
            published = publish_job(store, program, inputs, units=units, min_gpu_memory_mib=min_gpu_mem, meta=meta)
        finally:
            store.close()
        d = published.spec
        spec_cid, program_root, inputs_root, units = published.spec_cid, d.program_root, d.inputs_root, d.num_units
    try:
        now = _post_now(cs.w3)
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


def _post_sharded(program: str, inputs: str, meta: dict, shards: int | None, units_per_shard: int | None,
                  reward_wei: int, common: dict, claim_in: int, account, rpc_url, deployment, as_json: bool) -> None:
    """job post --shards/--units-per-shard: reward and stake split in proportion to each shard's
    units (stakes rounded up), the same bond, deadlines and hardware floor for every shard; one
    postJobs transaction (docs/protocol.md 4.12)."""
    from gpumesh.client.chain.types import JobSpec
    from gpumesh.node.jobs.publish import publish_sharded, shard_sizes, split_amount
    from gpumesh.node.runtime.files import load_program, load_units

    prog = load_program(program).program
    sizes = shard_sizes(len(load_units(inputs, prog)), shards=shards, units_per_shard=units_per_shard)
    if reward_wei < len(sizes):
        raise UsageError(f"--reward: {reward_wei} wei cannot pay {len(sizes)} shards at least 1 wei each")
    rewards = split_amount(reward_wei, sizes)
    stakes = split_amount(common["required_stake"], sizes, round_up=True)
    cs = chain_session(rpc_url, deployment, account, write=True)
    # the chain's floors hold per shard; the largest shard's stake is the strictest bond floor
    _check_against_chain(cs, reward_wei, claim_in=claim_in, **dict(common, required_stake=max(stakes)))
    require_funds(cs.w3, cs.address, account, reward_wei, POST_GAS_PER_SHARD * len(sizes) + POST_GAS,
                  f"posting {len(sizes)} shards escrows the reward")
    store = ipfs_store()
    try:
        pubs = publish_sharded(store, program, inputs, sizes, min_gpu_memory_mib=common["min_gpu_memory_mib"],
                               meta=meta, samples_per_unit=_per_unit(prog)[0])
    finally:
        store.close()
    now = _post_now(cs.w3)
    specs = [JobSpec(spec_cid=p.spec_cid, program_root=p.spec.program_root, inputs_root=p.spec.inputs_root,
                     num_units=p.spec.num_units, claim_deadline=now + claim_in,
                     **dict(common, required_stake=stakes[i])) for i, p in enumerate(pubs)]
    ids, res = cs.market.post_jobs(specs, rewards)
    from gpumesh.client.chain.types import format_eth

    shards_info = [{"job_id": int(j), "units": n, "reward": r, "stake": st, "spec_cid": p.spec_cid,
                    "inputs_root": "0x" + p.spec.inputs_root.hex()}
                   for j, n, r, st, p in zip(ids, sizes, rewards, stakes, pubs, strict=True)]
    info = {"job_id": int(ids[0]), "job_ids": [int(j) for j in ids], "shards": shards_info,
            "program_cid": pubs[0].spec.program_cid, "program_root": "0x" + pubs[0].spec.program_root.hex(),
            "units": sum(sizes)}
    if not as_json:
        typer.echo(f"program {info['program_cid']} (root {info['program_root']})")
        for sh in shards_info:
            typer.echo(f"shard job {sh['job_id']}: {sh['units']} units, reward {format_eth(sh['reward'])}, "
                       f"stake {format_eth(sh['stake'])}, spec {sh['spec_cid']}")
    report_tx(res, as_json, f"posted job {ids[0]}..{ids[-1]} ({len(ids)} shards; `gpumesh job result {ids[0]}` "
              "assembles them)", **info)


MIN_CHALLENGE_WINDOW = 120  # s: gpumesh's floor (the chain takes any window > 0)
POST_GAS = 400_000  # gas budgeted for postJob when checking the poster's balance (the demo measured ~150k)
POST_GAS_PER_SHARD = 160_000  # postJobs per shard (forge: 121,732 per shard at 16 shards)


def _per_unit(program) -> tuple[int, int | None]:
    """(samples one unit holds, number of output classes or None) from the program's last op, the
    way `job result` reads predictions (node/jobs/results.py)."""
    import math

    from gpumesh.client.core.ops.types import Opcode

    last = program.ops[-1].desc
    shape = last.out.shape
    if last.opcode == Opcode.ARGMAX:
        return math.prod(shape), last.inputs[0].type.shape[-1]
    if last.opcode == Opcode.PAIRARGMAX or len(shape) <= 1:
        return math.prod(shape), None
    return math.prod(shape[:-1]), shape[-1]


def _post_meta(program: str, inputs: str, units: int | None, samples: int | None, class_names: str | None) -> dict:
    """The spec's meta from --samples/--class-names, checked against the program and inputs files."""
    from pathlib import Path

    from gpumesh.node.runtime.files import load_program, load_units

    if not Path(program).is_dir():
        raise UsageError(f"--program {program}: not a program folder")
    if not Path(inputs).is_file():
        raise UsageError(f"--inputs {inputs}: no such file")
    prog = load_program(program).program
    n = len(load_units(inputs, prog))
    if units is not None and units != n:
        raise UsageError(f"--units {units}, but {inputs} holds {n} units")
    per_unit, classes = _per_unit(prog)
    meta: dict = {}
    if samples is not None:
        lo, hi = (n - 1) * per_unit + 1, n * per_unit
        if not lo <= samples <= hi:
            raise UsageError(f"--samples {samples}: {inputs} holds {n} units of {per_unit}, so between {lo} and "
                             f"{hi} samples (only the last unit may be padded)")
        meta["samples"] = samples
    if class_names:
        from gpumesh.node.runtime.textgen import generation_meta

        if generation_meta(prog.meta) is not None:
            raise UsageError("--class-names: a text-generation program outputs generated tokens, not classes "
                             "(job result prints the texts); drop --class-names")
        names = [c.strip() for c in class_names.split(",")]
        if any(not c for c in names):
            raise UsageError("--class-names: an empty name (comma-separated names, e.g. cat,dog)")
        if classes is not None and len(names) != classes:
            raise UsageError(f"--class-names: {len(names)} names, but the program has {classes} output classes")
        meta["labels"] = names
    return meta


def _check_against_chain(cs, reward: int, *, required_stake: int, dispute_bond: int, execution_time: int,
                         challenge_window: int, claim_in: int, min_gpu_memory_mib: int) -> None:
    """The spec checks of JobMarket._checkSpec with the floors read from the contract, each naming the
    allowed range, so a bad job is refused before anything is uploaded."""
    from gpumesh.client.chain.types import format_eth

    f = cs.market.contract.functions
    min_exec, max_d = int(f.MIN_EXECUTION_TIME().call()), int(f.MAX_DURATION().call())
    bond_bps, min_bond = int(f.MIN_BOND_BPS().call()), int(f.minDisputeBond().call())
    if required_stake == 0:
        raise UsageError("--stake: must be more than 0 (it is what a cheating worker loses)")
    floor = max(min_bond, -(-required_stake * bond_bps // 10_000))
    if dispute_bond < floor:
        raise UsageError(f"--bond {format_eth(dispute_bond)}: the chain requires at least {format_eth(floor)} for a "
                         f"{format_eth(required_stake)} stake (the larger of minDisputeBond {format_eth(min_bond)} "
                         f"and {bond_bps / 100:g}% of the stake)")
    if not min_exec <= execution_time <= max_d:
        raise UsageError(f"--exec-time {_span(execution_time)}: the chain allows {_span(min_exec)} to {_span(max_d)}")
    if not MIN_CHALLENGE_WINDOW <= challenge_window <= max_d:
        raise UsageError(f"--challenge-window {_span(challenge_window)}: allowed {_span(MIN_CHALLENGE_WINDOW)} to "
                         f"{_span(max_d)}; a shorter window can close before a watchtower has fetched the outputs, "
                         "re-run the units and opened a dispute")
    if not 1 <= claim_in <= max_d:
        raise UsageError(f"--claim-deadline {_span(claim_in)}: allowed 1s to {_span(max_d)} from now")
    if reward >= 2**96:
        raise UsageError(f"--reward {format_eth(reward)}: more than the chain's uint96 escrow holds")


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
    j = _get_job(cs, job_id)
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


def _get_job(cs, job_id: int):
    """The job, or one line saying which job ids exist (not the contract's revert of getJob)."""
    count = cs.market.job_count()
    if not 1 <= job_id <= count:
        have = f"jobs are 1..{count}" if count else "no job has been posted yet"
        raise UsageError(f"job {job_id} does not exist on this chain ({have})")
    return cs.market.get_job(job_id)


def _deadline_label(j) -> str:
    """Which deadline Job.deadline is in this state (docs/protocol.md 4.2)."""
    return {"Open": "claim deadline", "Claimed": "execution deadline",
            "Submitted": "challenge deadline"}.get(j.state.label, "deadline")


def _chain_now(w3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])  # chain time (a devnet may have travelled)


def _post_now(w3) -> int:
    """The time a new post's windows count from: the latest block's timestamp, or the wall clock when
    that is later (the post is mined in a block at or after both on a node whose blocks lag, such as
    an idle automining devnet), so `--claim-deadline 1h` gives a full hour after the post."""
    import time

    return max(_chain_now(w3), int(time.time()))


def _span(seconds: int) -> str:
    """A duration for people: 45s, 5m, 2h, 2h05m, 3d, 3d4h."""
    s = abs(int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h" + (f"{s % 3600 // 60:02d}m" if s % 3600 >= 60 else "")
    return f"{s // 86400}d" + (f"{s % 86400 // 3600}h" if s % 86400 >= 3600 else "")


def _when(ts: int, w3=None, now: int | None = None) -> str:
    """A chain timestamp as UTC time plus how far it is from `now` (default: the chain's latest block)."""
    import datetime

    if not ts:
        return "-"
    now = _chain_now(w3) if now is None else now
    at = datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = ts - now
    return f"{at} ({'in ' + _span(delta) if delta > 0 else 'now' if delta == 0 else _span(delta) + ' ago'})"


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
    from gpumesh.client.chain.dispute import DisputeGameClient
    from gpumesh.client.cli.common import unlock_signer

    cs = chain_session(rpc_url, deployment, None, write=False)
    job = _get_job(cs, job_id)
    if not 0 <= unit < job.num_units:
        raise UsageError(f"--unit {unit}: job {job_id} has units 0..{job.num_units - 1}")
    dep = cs.deployment
    game = DisputeGameClient.with_account(cs.w3, dep.dispute_game, unlock_signer(account), from_block=dep.deploy_block)
    gid, res = game.request_data(job_id, unit, job.dispute_bond)
    report_tx(res, as_json, f"requested unit {unit} of job {job_id} on-chain (game {gid})", job_id=job_id, game_id=gid)


# ---------------------------------------------------------------- following a job and its result

_TERMINAL = ("FINALIZED", "CANCELLED", "EXPIRED", "SLASHED")


# Event fields shown as names, times and ETH rather than raw integers (the contracts' enums are
# mirrored in gpumesh.client.core.game).
_TIME_ARGS = {"executionDeadline", "challengeDeadline", "readyAt"}
_WEI_ARGS = {"reward", "refund", "slashed", "stake", "paid", "bond", "burned", "amount"}


def _enum_args():
    from gpumesh.client.core.game import Outcome, Phase, Reason

    return {"phase": Phase, "outcome": Outcome, "reason": Reason}


def _short_hex(v: bytes) -> str:
    """0x + hex, shortened to its first 4 and last 2 bytes when longer than 8 bytes."""
    h = bytes(v).hex()
    return "0x" + (h if len(h) <= 16 else f"{h[:8]}…{h[-4:]}")


def _arg_text(key: str, v, now: int) -> str:
    """One event argument for people: short hex for bytes, enum names, UTC times, ETH amounts."""
    from gpumesh.client.chain.types import format_eth

    if isinstance(v, bytes | bytearray):
        return _short_hex(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_arg_text(key, x, now) for x in v) + "]"
    enum = _enum_args().get(key)
    if enum is not None and isinstance(v, int):
        return enum(v).name if v in enum._value2member_map_ else f"{v} (unknown {enum.__name__})"
    if key in _TIME_ARGS and isinstance(v, int):
        return _when(v, now=now)
    if key in _WEI_ARGS and isinstance(v, int) and not isinstance(v, bool):
        return format_eth(v)
    return str(v)


def _json_arg(v):
    """An event argument for --json: bytes as full 0x-hex (in lists too), everything else as is."""
    if isinstance(v, bytes | bytearray):
        return "0x" + bytes(v).hex()
    if isinstance(v, list | tuple):
        return [_json_arg(x) for x in v]
    return v


def _event_line(ev, now: int) -> str:
    skip = {"jobId", "gameId"}
    parts = [f"{k}={_arg_text(k, v, now)}" for k, v in ev.args.items() if k not in skip]
    where = f"game {ev.args['gameId']} " if "gameId" in ev.args else ""
    return f"block {ev.block_number}: {where}{ev.name} " + " ".join(parts)


WATCH_TIMEOUT_EXIT = 8  # `job watch --timeout` ran out before the job ended (README: exit codes)


@app.command("watch")
def watch(
    job_id: int = typer.Argument(..., min=1),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between polls."),
    timeout: float = typer.Option(None, "--timeout", min=0, help="Give up after this many seconds (default: until "
                                  f"the job ends); a timeout exits with code {WATCH_TIMEOUT_EXIT}."),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (NDJSON)."),
) -> None:
    """Follow a job live: its events (and those of its dispute games) and state changes, until it
    is finalized, cancelled, expired or slashed (exit 0), or --timeout runs out (a line on stderr, exit 8)."""
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
        now = _chain_now(cs.w3)
        for ev in reader.poll():
            mine = ev.args.get("jobId") == job_id
            if mine and "gameId" in ev.args:
                games.add(ev.args["gameId"])
            if mine or ev.args.get("gameId") in games:
                args = {k: _json_arg(v) for k, v in ev.args.items()}
                out("event", _event_line(ev, now), {"event": ev.name, "block": ev.block_number, "tx": ev.tx_hash,
                                                    "args": args})
        reader.commit()
        j = _get_job(cs, job_id)
        if j.state != last_state:
            last_state = j.state
            extra = f", {j.open_disputes} open dispute(s)" if j.open_disputes else ""
            out("state", f"state: {j.state.label} ({_deadline_label(j)} {_when(j.deadline, now=now)}{extra})",
                {"state": j.state.label, "deadline": j.deadline, "open_disputes": j.open_disputes})
        if j.state.name in _TERMINAL:
            return
        if t_end is not None and time.monotonic() >= t_end:
            typer.echo(f"gpumesh: job watch: timed out after {timeout:g}s; job {job_id} is still {j.state.label}",
                       err=True)
            raise typer.Exit(WATCH_TIMEOUT_EXIT)
        time.sleep(interval)


@app.command("result")
def result(
    job_id: int = typer.Argument(..., min=1),
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder to write outputs.safetensors (and predictions.json)."),
    labels: str = typer.Option(None, "--labels", help="JSON list of the true label of each sample: prints accuracy."),
    show: int = typer.Option(20, "--show", min=0, help="Predictions to print (the file has them all)."),
    this_shard: bool = typer.Option(False, "--this-shard", help="Of a sharded job, only this shard's outputs "
                                    "(default: every shard, each verified against its own root, in order)."),
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Download a job's outputs, verify them against the ON-CHAIN result root, write them, and print
    the predictions (with the spec's class names, and accuracy against --labels)."""
    import json
    from pathlib import Path

    from gpumesh.node.jobs.results import fetch_result, fetch_sharded_result

    truth = None
    if labels:
        try:
            truth = json.loads(Path(labels).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--labels {labels}: {exc}") from None
        if not isinstance(truth, list) or not all(isinstance(x, int) for x in truth):
            raise UsageError(f"--labels {labels}: want a JSON list of integers")
    cs = chain_session(rpc_url, deployment, None, write=False)
    job = _get_job(cs, job_id)
    if job.state.name == "SLASHED":  # the submitted outputs were proven wrong: never hand them out as a result
        raise ValidationError(f"job {job_id} is Slashed: a dispute game proved its submitted result wrong, so no "
                              "outputs are written (the reward is credited back to the poster: `gpumesh job withdraw`)")
    store = ipfs_store()
    try:
        from gpumesh.client.chain.dispute import DisputeGameClient

        game = DisputeGameClient(cs.w3, cs.deployment.dispute_game, from_block=cs.deployment.deploy_block)
        sharded = None if this_shard else fetch_sharded_result(store, cs.market, job, cs.deployment.deploy_block,
                                                               served=game.served_data)
        res = sharded or fetch_result(store, cs.market, job, cs.deployment.deploy_block, served=game.served_data)
    finally:
        store.close()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if sharded is not None:
        from gpumesh.node.jobs.outputs import outputs_bytes

        (folder / "outputs.safetensors").write_bytes(outputs_bytes(sharded.outputs))
        jobs = [cs.market.get_job(j) for j in sharded.job_ids]
        final = all(j.state.name == "FINALIZED" for j in jobs)
        summary = {"job_id": sharded.first_job_id, "job_ids": sharded.job_ids,
                   "states": [j.state.label for j in jobs],
                   "result_roots": ["0x" + r.result_root.hex() for r in sharded.shards],
                   "outputs_cids": [r.outputs_cid for r in sharded.shards]}
        _print_result(sharded, summary, folder, truth, final, show, as_json,
                       f"{len(sharded.shards)} shards (jobs {sharded.job_ids[0]}..{sharded.job_ids[-1]}), each "
                       "verified against its own on-chain result root",
                       [] if final else [f"note: shards not final yet: "
                                         f"{', '.join(str(j.job_id) for j in jobs if j.state.name != 'FINALIZED')}"])
        return
    final = job.state.name == "FINALIZED"
    summary = {"job_id": job_id, "state": job.state.label, "result_root": "0x" + res.result_root.hex(),
               "outputs_cid": res.outputs_cid}
    notes = [] if final else [f"note: the job is {job.state.label}; the result can still be challenged until "
                              f"{_when(job.deadline, cs.w3)}"]
    (folder / "outputs.safetensors").write_bytes(res.raw)
    _print_result(res, summary, folder, truth, final, show, as_json,
                  f"outputs {res.outputs_cid} verified against the on-chain result root 0x{res.result_root.hex()}",
                  notes, title=f"job {job_id}")


def _print_result(res, summary: dict, folder, truth, final: bool, show: int, as_json: bool, verified: str,
                  notes: list[str], title: str | None = None) -> None:
    """Write predictions.json and print (or emit as JSON) a job's verified result."""
    import json

    from gpumesh.node.jobs.results import accuracy

    texts = res.texts()  # a text-generation program: each prompt's generated text, no predictions
    preds = res.predictions() if texts is None else []
    names = res.label_names()
    written = folder / ("predictions.json" if texts is None else "texts.json")
    written.write_text(json.dumps([int(p) for p in preds] if texts is None else texts) + "\n")
    acc = accuracy(preds, truth) if truth is not None and texts is None else None
    summary.update({"outputs_file": str(folder / "outputs.safetensors"), "final": final})
    if texts is None:
        summary.update({"samples": len(preds), "predictions": [int(p) for p in preds],
                        "accuracy": None if acc is None else acc[0]})
    else:
        summary.update({"samples": len(texts), "texts": texts})
    if as_json:
        emit_json(summary)
        return
    typer.echo(verified)
    for line in notes:
        typer.echo(line)
    title = title or f"job {summary['job_id']}"
    if texts is not None:
        from gpumesh.client.cli.program_cmd import echo_texts

        typer.echo(f"{title}: generated text of {len(texts)} prompts (first {min(show, len(texts))})")
        echo_texts(texts, show)
    else:
        rows = [(i, int(p), names[int(p)] if names and 0 <= int(p) < len(names) else "") +
                ((truth[i], "ok" if i < len(truth) and truth[i] == int(p) else "x") if truth and i < len(truth) else ())
                for i, p in enumerate(preds[:show])]
        cols = ["sample", "prediction", "label"] + (["truth", ""] if truth else [])
        print_table(f"{title}: {len(preds)} predictions (first {min(show, len(preds))})", cols, rows)
    if acc is not None:
        typer.echo(f"accuracy {100 * acc[0]:.2f}% on {acc[1]} labelled samples")
    typer.echo(f"wrote {folder / 'outputs.safetensors'} and {written}")
