"""Typed values of the market and registry contracts (mirrors contracts/src/types/JobTypes.sol and
IWorkerRegistry.StakeInfo). Plain data, no I/O; imported by the chain adapter and its callers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import NewType

JobId = NewType("JobId", int)
Wei = NewType("Wei", int)
Address = NewType("Address", str)  # checksummed 0x address
Bytes32 = NewType("Bytes32", bytes)

ZERO_ADDRESS = Address("0x0000000000000000000000000000000000000000")


class JobState(IntEnum):
    """JobTypes.sol `JobState`; the numbers are the Solidity enum values."""

    NONE = 0
    OPEN = 1
    CLAIMED = 2
    SUBMITTED = 3
    FINALIZED = 4
    CANCELLED = 5
    EXPIRED = 6
    SLASHED = 7

    @property
    def label(self) -> str:
        return self.name.capitalize()


def _b32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        text = value.removeprefix("0x")
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{what} is not hex: {value!r}") from None
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class JobSpec:
    """What postJob takes (the reward is sent as the transaction value)."""

    spec_cid: str
    program_root: bytes
    inputs_root: bytes
    num_units: int
    required_stake: Wei
    claim_deadline: int  # unix seconds
    execution_time: int  # seconds
    challenge_window: int  # seconds
    min_gpu_memory_mib: int
    dispute_bond: Wei

    def __post_init__(self) -> None:
        object.__setattr__(self, "program_root", _b32(self.program_root, "program root"))
        object.__setattr__(self, "inputs_root", _b32(self.inputs_root, "inputs root"))

    def as_tuple(self) -> tuple:
        """The ABI tuple, in JobSpec field order."""
        return (
            self.spec_cid,
            self.program_root,
            self.inputs_root,
            self.num_units,
            self.required_stake,
            self.claim_deadline,
            self.execution_time,
            self.challenge_window,
            self.min_gpu_memory_mib,
            self.dispute_bond,
        )


@dataclass(frozen=True)
class Job:
    """JobMarket.getJob. `deadline` is the claim deadline while Open, the execution deadline while
    Claimed, the challenge deadline while Submitted."""

    job_id: JobId
    poster: Address
    reward: Wei
    required_stake: Wei
    dispute_bond: Wei
    execution_time: int
    challenge_window: int
    deadline: int
    num_units: int
    open_disputes: int
    state: JobState
    # The poster's claim deadline, kept after a claim: a claimed job that misses its execution
    # deadline before it is re-opened (JobReopened) rather than expired (docs/protocol.md 4.3).
    claim_deadline: int
    worker: Address
    # The earliest-opened game the worker lost (0: none) and (first_winner) its challenger, who is
    # paid the slash once every game of the job ended (docs/protocol.md 4.11).
    first_won_game: int
    program_root: bytes
    inputs_root: bytes
    result_root: bytes
    first_winner: Address

    @classmethod
    def from_abi(cls, job_id: int, t: tuple | dict) -> Job:
        if isinstance(t, dict):
            t = tuple(t.values())
        (poster, reward, stake, bond, exec_time, window, deadline, units, open_d, state, claim_deadline, worker,
         won, pr, ir, rr, winner) = t
        return cls(
            JobId(job_id), Address(poster), Wei(reward), Wei(stake), Wei(bond), exec_time, window, deadline,
            units, open_d, JobState(state), claim_deadline, Address(worker), won, bytes(pr), bytes(ir), bytes(rr),
            Address(winner),
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["state"] = self.state.label
        for k in ("program_root", "inputs_root", "result_root"):
            d[k] = "0x" + getattr(self, k).hex()
        return d


@dataclass(frozen=True)
class StakeInfo:
    """WorkerRegistry.stakeOf plus freeStake and credits (the `worker info` view)."""

    worker: Address
    total: Wei
    locked: Wei
    unbonding: Wei
    unbonding_ready_at: int
    credits: Wei
    capabilities_cid: str

    @property
    def free(self) -> Wei:
        return Wei(self.total - self.locked)

    def to_json(self) -> dict:
        d = asdict(self)
        d["free"] = self.free
        return d


_UNITS = {"wei": 0, "gwei": 9, "eth": 18, "ether": 18}
_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_wei(text: str | int) -> Wei:
    """'1.5' or '1.5eth' -> 1.5 ETH in wei; '20gwei'; '123wei'. Exact (decimal), never negative."""
    from decimal import Decimal, InvalidOperation

    if isinstance(text, int):
        return Wei(text)
    t = text.strip().lower().replace("_", "")
    unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if t.endswith(u)), "eth")
    num = t[: -len(unit)].strip() if t.endswith(unit) else t
    try:
        value = Decimal(num) * (Decimal(10) ** _UNITS[unit])
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r} (examples: 1.5, 0.2eth, 20gwei, 1000wei)") from None
    if value < 0 or value != value.to_integral_value():
        raise ValueError(f"not a whole, non-negative number of wei: {text!r}")
    return Wei(int(value))


def parse_duration(text: str | int) -> int:
    """'90' (seconds), '30m', '2h', '1d', '1w' -> seconds."""
    if isinstance(text, int):
        return text
    t = text.strip().lower()
    mult = _DURATIONS.get(t[-1:], None)
    num = t[:-1] if mult else t
    try:
        value = int(num) * (mult or 1)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (examples: 90, 30m, 2h, 1d)") from None
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value


def format_eth(wei: int) -> str:
    from decimal import Decimal

    return f"{(Decimal(wei) / Decimal(10**18)).normalize():f} ETH"
