"""`gpumesh job` commands: post, status, list, cancel, and the single-step moves of the lifecycle
(claim, submit, finalize, expire, withdraw). Thin: parse options, call gpumesh.client.chain, print.
web3 is imported inside the commands (through `chain_session`), never at module level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from gpumesh.client.cli.common import ACCOUNT_OPT, JSON_OPT, emit_json, print_table, unlock_signer
from gpumesh.client.cli.context import settings
from gpumesh.client.core.errors import UsageError

app = typer.Typer(help="Post jobs and follow them through their lifecycle.", no_args_is_help=True)

RPC_OPT = typer.Option(None, "--rpc-url", help="JSON-RPC URL (overrides the network profile).")
DEPLOYMENT_OPT = typer.Option(None, "--deployment", help="Deployment JSON file (default: the network's).")
STATE_OPT = typer.Option(None, "--state", help="Only jobs in these states (open, claimed, ...).")


@dataclass
class ChainSession:
    w3: Any
    deployment: Any
    market: Any  # JobMarketClient
    registry: Any  # WorkerRegistryClient
    address: str | None


def chain_session(rpc_url: str | None, deployment: str | None, account: str | None, write: bool) -> ChainSession:
    """Connect to the configured chain and open the market/registry clients (signing when `write`)."""
    from pathlib import Path

    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
    from gpumesh.client.chain.deploy import Deployment
    from gpumesh.client.chain.tx import NonceManager

    s = settings().with_overrides(rpc_url=rpc_url, deployment=Path(deployment) if deployment else None)
    dep = Deployment.load(s.deployment_file)
    w3 = connect(s.network.rpc_url, dep)
    if write:
        acct = unlock_signer(account)
        nonces = NonceManager(w3)
        market = JobMarketClient.with_account(w3, dep.market, acct, nonces)
        registry = WorkerRegistryClient.with_account(w3, dep.registry, acct, nonces)
        return ChainSession(w3, dep, market, registry, acct.address)
    return ChainSession(w3, dep, JobMarketClient(w3, dep.market), WorkerRegistryClient(w3, dep.registry), None)


def _parse(fn, text: str, what: str):
    try:
        return fn(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _tx_line(verb: str, res) -> None:
    typer.echo(f"{verb} (tx {res.tx_hash}, block {res.block_number}, gas {res.gas_used})")


@app.command("post")
def post(
    spec_cid: str = typer.Option(..., "--spec-cid", help="IPFS CID of the job spec document."),
    program_root: str = typer.Option(..., "--program-root", help="0x + 64 hex: the program root."),
    inputs_root: str = typer.Option(..., "--inputs-root", help="0x + 64 hex: the inputs root."),
    units: int = typer.Option(..., "--units", min=1, help="Number of units (leaves of the result root)."),
    reward: str = typer.Option(..., "--reward", help="Reward held in escrow (1.5, 0.2eth, 20gwei, 10wei)."),
    stake: str = typer.Option(..., "--stake", help="Stake the worker must lock."),
    bond: str = typer.Option(..., "--bond", help="Bond a challenger posts per dispute game."),
    claim_deadline: str = typer.Option("1h", "--claim-deadline", help="Claim window from now (90, 30m, 2h, 1d)."),
    exec_time: str = typer.Option("1h", "--exec-time", help="Time from claim to the submit deadline."),
    challenge_window: str = typer.Option("1h", "--challenge-window", help="Time after submit to challenge."),
    min_gpu_mem: int = typer.Option(0, "--min-gpu-mem", min=0, help="Minimum GPU memory in MiB (0: CPU is fine)."),
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Post a job with its reward in escrow."""
    from gpumesh.client.chain.types import JobSpec, parse_duration, parse_wei

    reward_wei = _parse(parse_wei, reward, "--reward")
    try:
        spec_args = dict(
            spec_cid=spec_cid, program_root=program_root, inputs_root=inputs_root, num_units=units,
            required_stake=_parse(parse_wei, stake, "--stake"), dispute_bond=_parse(parse_wei, bond, "--bond"),
            execution_time=_parse(parse_duration, exec_time, "--exec-time"),
            challenge_window=_parse(parse_duration, challenge_window, "--challenge-window"),
            min_gpu_memory_mib=min_gpu_mem,
        )
        claim_in = _parse(parse_duration, claim_deadline, "--claim-deadline")
        cs = chain_session(rpc_url, deployment, account, write=True)
        now = cs.w3.eth.get_block("latest")["timestamp"]  # chain time (a devnet may have travelled)
        spec = JobSpec(claim_deadline=now + claim_in, **spec_args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    job_id, res = cs.market.post_job(spec, reward_wei)
    if as_json:
        emit_json({"job_id": job_id, "tx": res.tx_hash, "block": res.block_number, "gas_used": res.gas_used})
    else:
        _tx_line(f"posted job {job_id}", res)


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
            ("units", j.num_units), ("deadline", j.deadline), ("open disputes", j.open_disputes),
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
                  j.deadline, j.worker) for j in jobs])


def _simple(verb: str, method: str):
    def command(
        job_id: int = typer.Argument(..., min=1),
        account: str = ACCOUNT_OPT,
        rpc_url: str = RPC_OPT,
        deployment: str = DEPLOYMENT_OPT,
        as_json: bool = JSON_OPT,
    ) -> None:
        cs = chain_session(rpc_url, deployment, account, write=True)
        res = getattr(cs.market, method)(job_id)
        if as_json:
            emit_json({"job_id": job_id, "tx": res.tx_hash, "block": res.block_number, "gas_used": res.gas_used})
        else:
            _tx_line(f"{verb} job {job_id}", res)

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
    res = cs.market.submit_result(job_id, root, outputs_cid)
    if as_json:
        emit_json({"job_id": job_id, "tx": res.tx_hash, "block": res.block_number, "gas_used": res.gas_used})
    else:
        _tx_line(f"submitted job {job_id}", res)


@app.command("withdraw")
def withdraw(
    account: str = ACCOUNT_OPT,
    rpc_url: str = RPC_OPT,
    deployment: str = DEPLOYMENT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Withdraw your market credits (rewards and refunds)."""
    from gpumesh.client.chain.types import format_eth

    cs = chain_session(rpc_url, deployment, account, write=True)
    amount, res = cs.market.withdraw()
    if as_json:
        emit_json({"amount_wei": amount, "tx": res.tx_hash})
    else:
        _tx_line(f"withdrew {format_eth(amount)}", res)
