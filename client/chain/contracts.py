"""Typed wrappers over JobMarket and WorkerRegistry: reads return dataclasses from
gpumesh.client.chain.types, writes go through a TxSender and return the decoded events.
Imported by services and CLI commands (which build the web3 connection and the sender)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpumesh.client.chain.abi_store import load_abi
from gpumesh.client.chain.deploy import Deployment
from gpumesh.client.chain.tx import Call, NonceManager, TxSender, reverts_decoded
from gpumesh.client.chain.types import Address, Job, JobId, JobSpec, JobState, StakeInfo, Wei
from gpumesh.client.core.errors import ChainError


def open_web3(rpc_url: str, timeout: float = 10.0):
    """(Web3, chain id) for `rpc_url` (http(s):// or ws(s)://, counted: gpumesh.client.chain.provider);
    an endpoint that cannot be reached or does not answer like an RPC raises RpcUnavailable. The one
    way the CLI, the services and the daemons open a chain."""
    from gpumesh.client.chain.provider import RpcUnavailable, make_web3, transport_reason

    w3 = make_web3(rpc_url, timeout)
    try:
        return w3, w3.eth.chain_id
    except ChainError:
        raise  # RpcUnavailable from the transport, already one line
    except Exception as exc:  # noqa: BLE001 - a malformed answer also means "not an RPC we can use"
        raise RpcUnavailable(f"RPC at {rpc_url} is unreachable ({transport_reason(exc)})") from None


def connect(rpc_url: str, deployment: Deployment | None = None, timeout: float = 10.0):
    """A Web3 for `rpc_url` (http(s):// or ws(s)://, counted: gpumesh.client.chain.provider); checks the
    chain id against the deployment and that the market exists."""
    w3, chain_id = open_web3(rpc_url, timeout)
    if deployment is not None:
        if chain_id != deployment.chain_id:
            raise ChainError(f"RPC at {rpc_url} serves chain {chain_id}, the deployment is for chain {deployment.chain_id}")
        if not w3.eth.get_code(deployment.market):
            raise ChainError(f"no JobMarket code at {deployment.market} on {rpc_url} (stale deployment file?)")
    return w3


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[tuple[str, dict], ...]  # (event name, args) in log order

    def event(self, name: str) -> dict:
        for n, args in self.events:
            if n == name:
                return args
        raise ChainError(f"transaction {self.tx_hash} emitted no {name}")


class _Base:
    NAME = ""

    def __init__(self, w3, address: str, sender: TxSender | None = None) -> None:
        self.w3 = w3
        self.address = Address(w3.to_checksum_address(address))
        self.contract = w3.eth.contract(address=self.address, abi=list(load_abi(self.NAME)))
        self.sender = sender

    @classmethod
    def with_account(cls, w3, address: str, account, nonces: NonceManager | None = None):
        return cls(w3, address, TxSender(w3, account, nonces or NonceManager(w3)))

    def _call(self, fn: str, *args: Any):
        return reverts_decoded(lambda: getattr(self.contract.functions, fn)(*args).call(), f"{fn}{args}")

    @property
    def account_address(self) -> str:
        if self.sender is None:
            raise ChainError(f"{self.NAME} client has no account (read-only)")
        return self.sender.address

    def tx_call(self, fn: str, *args: Any, value: int = 0, context: str | None = None) -> Call:
        """Entry point `fn(*args)` as a Call (for TxSender / the daemons' outbox)."""
        ctx = context or f"{fn}({', '.join(_short(a) for a in args)})"
        return Call(getattr(self.contract.functions, fn)(*args), int(value), ctx)

    def send(self, call: Call) -> TxResult:
        if self.sender is None:
            raise ChainError(f"{call.context} needs an account (read-only {self.NAME} client)")
        return self.result_of(self.sender.transact(call.fn, value=call.value, context=call.context))

    def _transact(self, fn: str, *args: Any, value: int = 0) -> TxResult:
        return self.send(self.tx_call(fn, *args, value=value))

    def result_of(self, receipt) -> TxResult:
        """A mined receipt as a TxResult with this contract's events decoded."""
        return TxResult("0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"],
                        receipt["gasUsed"], tuple(self._sorted_events(receipt)))

    def _events(self, receipt):
        from web3.logs import DISCARD

        for ev in self.contract.events:
            for log in ev().process_receipt(receipt, errors=DISCARD):
                if log["address"] == self.address:  # only this contract's logs
                    yield log["logIndex"], log["event"], dict(log["args"])

    def _sorted_events(self, receipt):
        return [(n, a) for _, n, a in sorted(self._events(receipt), key=lambda t: t[0])]


def _short(a: Any) -> str:
    if isinstance(a, bytes | bytearray):
        return "0x" + bytes(a).hex()[:8] + "…"
    if isinstance(a, tuple):
        return "spec"
    return str(a)


class JobMarketClient(_Base):
    NAME = "JobMarket"

    # ---- reads
    def get_job(self, job_id: int) -> Job:
        return Job.from_abi(job_id, self._call("getJob", int(job_id)))

    def job_count(self) -> int:
        return self._call("jobCount")

    def credits(self, account: str) -> Wei:
        return Wei(self._call("credits", self.w3.to_checksum_address(account)))

    def is_slashed(self, job_id: int) -> bool:
        return self._call("isSlashed", int(job_id))

    def jobs(self, states: set[JobState] | None = None, batch: int = 100) -> list[Job]:
        """Every job (in `states`), read `batch` getJob calls per JSON-RPC batch request (one HTTP
        round trip each; a node that refuses batches is read one call at a time)."""
        out = []
        n = self.job_count()
        for lo in range(1, n + 1, batch):
            for j in self._jobs_batch(range(lo, min(n, lo + batch - 1) + 1)):
                if states is None or j.state in states:
                    out.append(j)
        return out

    def _jobs_batch(self, ids: range) -> list[Job]:
        from web3.exceptions import Web3Exception

        try:
            with self.w3.batch_requests() as b:
                for i in ids:
                    b.add(self.contract.functions.getJob(i))
                raws = b.execute()
            return [Job.from_abi(i, raw) for i, raw in zip(ids, raws, strict=True)]
        except (Web3Exception, ValueError, TypeError):
            return [self.get_job(i) for i in ids]

    # ---- writes
    def post_job(self, spec: JobSpec, reward: int) -> tuple[JobId, TxResult]:
        res = self._transact("postJob", spec.as_tuple(), value=reward)
        return JobId(res.event("JobPosted")["jobId"]), res

    def post_jobs(self, specs: list[JobSpec], rewards: list[int]) -> tuple[list[JobId], TxResult]:
        """The shards of one job in one transaction (postJobs): their consecutive ids, in order."""
        res = self._transact("postJobs", [s.as_tuple() for s in specs], [int(r) for r in rewards],
                             value=sum(int(r) for r in rewards))
        ev = res.event("JobsPosted")
        first = int(ev["firstJobId"])
        return [JobId(first + i) for i in range(int(ev["count"]))], res

    def shard_group(self, first_job_id: int, from_block: int = 0) -> tuple[int, str] | None:
        """(count, poster) of the JobsPosted event that started at `first_job_id`, or None."""
        logs = self.contract.events.JobsPosted().get_logs(
            argument_filters={"firstJobId": int(first_job_id)}, from_block=from_block)
        if not logs:
            return None
        a = logs[-1]["args"]
        return int(a["count"]), str(a["poster"])

    def claim_job(self, job_id: int) -> TxResult:
        return self._transact("claimJob", int(job_id))

    def submit_result(self, job_id: int, result_root: bytes, outputs_cid: str) -> TxResult:
        return self._transact("submitResult", int(job_id), bytes(result_root), outputs_cid)

    def finalize_job(self, job_id: int) -> TxResult:
        return self._transact("finalizeJob", int(job_id))

    def cancel_job(self, job_id: int) -> TxResult:
        return self._transact("cancelJob", int(job_id))

    def expire_job(self, job_id: int) -> TxResult:
        return self._transact("expireJob", int(job_id))

    def withdraw(self) -> tuple[Wei, TxResult]:
        res = self._transact("withdraw")
        return Wei(res.event("Withdrawn")["amount"]), res


class WorkerRegistryClient(_Base):
    NAME = "WorkerRegistry"

    # ---- reads
    def info(self, worker: str) -> StakeInfo:
        w = self.w3.to_checksum_address(worker)
        total, locked, unbonding, ready = self._call("stakeOf", w)
        return StakeInfo(Address(w), Wei(total), Wei(locked), Wei(unbonding), ready,
                         Wei(self._call("credits", w)), self._call("capabilities", w))

    def free_stake(self, worker: str) -> Wei:
        return Wei(self._call("freeStake", self.w3.to_checksum_address(worker)))

    def unbonding_delay(self) -> int:
        return self._call("unbondingDelay")

    def total_burned(self) -> Wei:
        return Wei(self._call("totalBurned"))

    # ---- writes
    def stake(self, amount: int) -> TxResult:
        return self._transact("stake", value=amount)

    def request_unstake(self, amount: int) -> TxResult:
        return self._transact("requestUnstake", int(amount))

    def withdraw(self) -> tuple[Wei, TxResult]:
        res = self._transact("withdraw")
        return Wei(res.event("Withdrawn")["amount"]), res

    def set_capabilities(self, cid: str) -> TxResult:
        return self._transact("setCapabilities", cid)
