"""Typed wrappers over JobMarket and WorkerRegistry: reads return dataclasses from
gpumesh.client.chain.types, writes go through a TxSender and return the decoded events.
Imported by services and CLI commands (which build the web3 connection and the sender)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpumesh.client.chain.abi_store import load_abi
from gpumesh.client.chain.deploy import Deployment
from gpumesh.client.chain.tx import Call, NonceManager, TxSender, reverts_decoded, rpc_error
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

    # ---- the raw read path: hot view calls without web3's middleware and formatters
    def _raw_abi(self, fn: str) -> tuple[bytes, list[str], list[dict]]:
        """(selector, input types, output ABI entries) of view `fn` (cached; no overloads)."""
        cache = self.__dict__.setdefault("_raw_abis", {})
        if fn not in cache:
            from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector

            entry = next(e for e in self.contract.abi if e.get("type") == "function" and e.get("name") == fn)
            cache[fn] = (function_abi_to_4byte_selector(entry), [collapse_if_tuple(i) for i in entry["inputs"]],
                         list(entry["outputs"]))
        return cache[fn]

    def _raw_request(self, fn: str, args: tuple) -> tuple[str, list]:
        from eth_abi import encode

        selector, types, _ = self._raw_abi(fn)
        return "eth_call", [{"to": self.address, "data": "0x" + (selector + encode(types, list(args))).hex()}, "latest"]

    def _raw_result(self, fn: str, args: tuple, response: Any) -> Any:
        """The decoded answer of one eth_call response; a revert raises its decoded error."""
        from eth_abi import decode

        context = f"{fn}{args}"
        if not isinstance(response, dict):
            raise ChainError(f"{context}: the node answered {type(response).__name__}, not a JSON-RPC response")
        if "error" in response:
            raise rpc_error(response["error"], context)
        _, _, outputs = self._raw_abi(fn)
        from eth_utils.abi import collapse_if_tuple

        raw = bytes.fromhex(str(response.get("result") or "0x").removeprefix("0x"))
        values = decode([collapse_if_tuple(o) for o in outputs], raw)
        out = tuple(_checksummed(o, v) for o, v in zip(outputs, values, strict=True))
        return out[0] if len(out) == 1 else out

    def _read(self, fn: str, *args: Any) -> Any:
        """View `fn(*args)` at the latest block by one eth_call through the provider: encoded and
        decoded with eth_abi from the ABI, addresses checksummed, reverts decoded, as `_call`
        returns it for scalar and struct answers, for a fraction of web3's CPU per call."""
        method, params = self._raw_request(fn, args)
        return self._raw_result(fn, args, self.w3.provider.make_request(method, params))

    def _read_many(self, fn: str, arg_lists: list[tuple]) -> list[Any]:
        """`_read(fn, *args)` for each of `arg_lists` in one JSON-RPC batch (one HTTP round trip);
        one call at a time where the node refuses batches."""
        if not arg_lists:
            return []
        if len(arg_lists) > 1:
            try:
                answers = self.w3.provider.make_batch_request([self._raw_request(fn, a) for a in arg_lists])
            except (NotImplementedError, AttributeError):
                answers = None
            if isinstance(answers, list) and len(answers) == len(arg_lists):
                return [self._raw_result(fn, a, r) for a, r in zip(arg_lists, answers, strict=True)]
        return [self._read(fn, *a) for a in arg_lists]

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
        """This contract's logs in `receipt`, each decoded once by the event its first topic names
        (web3's process_receipt per event type decoded every log once per event of the ABI); a
        log that does not decode is left out, as process_receipt's DISCARD does."""
        from gpumesh.client.chain.events import _topic_bytes

        by_topic = self.__dict__.get("_by_topic")
        if by_topic is None:
            by_topic = self.__dict__["_by_topic"] = {_topic_bytes(ev().topic): ev() for ev in self.contract.events}
        for log in receipt["logs"]:
            if log["address"] != self.address or not log["topics"]:
                continue  # only this contract's logs
            ev = by_topic.get(_topic_bytes(log["topics"][0]))
            if ev is None:
                continue
            try:
                decoded = ev.process_log(log)
            except Exception:  # noqa: BLE001 - web3 raises several kinds for a log that does not match
                continue
            yield log["logIndex"], decoded["event"], dict(decoded["args"])

    def _sorted_events(self, receipt):
        return [(n, a) for _, n, a in sorted(self._events(receipt), key=lambda t: t[0])]


def _checksummed(abi: dict, value: Any) -> Any:
    """An eth_abi-decoded value with its addresses checksummed (web3 answers them so; lower-case
    ones would never compare equal to an account's address)."""
    t = str(abi.get("type", ""))
    if t.endswith("]"):
        inner = {**abi, "type": t[:t.rindex("[")]}
        return [_checksummed(inner, v) for v in value]
    if t == "address":
        from eth_utils import to_checksum_address

        return to_checksum_address(value)
    if t == "tuple":
        return tuple(_checksummed(c, v) for c, v in zip(abi["components"], value, strict=True))
    return value


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
        return Job.from_abi(job_id, self._read("getJob", int(job_id)))

    def get_jobs(self, job_ids: list[int]) -> dict[int, Job]:
        """getJob of each of `job_ids` in one JSON-RPC batch, by id."""
        ids = [int(i) for i in job_ids]
        return {i: Job.from_abi(i, raw) for i, raw in zip(ids, self._read_many("getJob", [(i,) for i in ids]), strict=True)}

    def job_count(self) -> int:
        return self._call("jobCount")

    def credits(self, account: str) -> Wei:
        return Wei(self._read("credits", self.w3.to_checksum_address(account)))

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
        return list(self.get_jobs(list(ids)).values())

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
        return Wei(self._read("freeStake", self.w3.to_checksum_address(worker)))

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
