"""Solidity custom errors as Python exceptions, generated from the shipped ABIs.

Every `error X(...)` in any ABI under gpumesh/client/chain/abi becomes one class `X`, a subclass of
`ContractRevert` (itself a `ChainError`), with the error's fields as attributes and in `.fields`.
`decode_revert(data)` turns revert data (4-byte selector + ABI arguments) into an instance; the
message is one line a user can act on. Imported by the chain adapter and by callers that catch a
specific revert (e.g. `except errors.JobMarket_WrongState`).
"""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from gpumesh.client.chain.abi_store import available, load_abi
from gpumesh.client.chain.types import JobState
from gpumesh.client.core.errors import ChainError


class ContractRevert(ChainError):
    """A transaction or call reverted with a custom error of ours (or one we do not know)."""

    error_name: str = ""
    field_names: tuple[str, ...] = ()

    def __init__(self, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message, **(fields or {}))
        self.fields: dict[str, Any] = dict(fields or {})
        for k, v in self.fields.items():
            setattr(self, k, v)


class UnknownRevert(ContractRevert):
    """Revert data we cannot decode (a panic, a string reason, or a selector not in our ABIs)."""


class TransactionFailed(ChainError):
    """A transaction was mined but reverted, and replaying it gave no revert data."""


class ReceiptTimeout(ChainError):
    """No receipt within the timeout (the transaction may still be mined later)."""


def _eth(wei: int) -> str:
    return f"{wei / 10**18:.6g} ETH ({wei} wei)"


def _state(v: int) -> str:
    try:
        return JobState(v).label
    except ValueError:
        return str(v)


# One-line messages for the errors people meet; others get a generic "Name(field=value, ...)".
_MESSAGES: dict[str, Any] = {
    "JobMarket_UnknownJob": lambda f: f"job {f['jobId']} does not exist",
    "JobMarket_WrongState": lambda f: f"job {f['jobId']} is {_state(f['actual'])}, this needs it {_state(f['expected'])}",
    "JobMarket_NotPoster": lambda f: f"only the poster {f['poster']} may do this to job {f['jobId']} (you are {f['caller']})",
    "JobMarket_NotWorker": lambda f: f"only the worker {f['worker']} may do this to job {f['jobId']} (you are {f['caller']})",
    "JobMarket_NotDisputeGame": lambda f: f"only the dispute game may call this (caller {f['caller']})",
    "JobMarket_InvalidSpec": lambda f: f"invalid job spec: {f['field']} is out of range",
    "JobMarket_InvalidReward": lambda f: f"invalid reward {f['value']} wei (must be > 0 and < 2^96)",
    "JobMarket_ZeroResultRoot": lambda f: f"job {f['jobId']}: the result root must not be zero",
    "JobMarket_ClaimDeadlinePassed": lambda f: f"job {f['jobId']}: the claim deadline {f['deadline']} has passed (now {f['nowTs']})",
    "JobMarket_ExecutionDeadlinePassed": lambda f: f"job {f['jobId']}: the execution deadline {f['deadline']} has passed (now {f['nowTs']})",
    "DisputeGame_NoResult": lambda f: f"job {f['jobId']} has no submitted result to dispute or request data of",
    "DisputeGame_WrongBond": lambda f: f"job {f['jobId']}: the bond is {f['required']} wei, {f['sent']} sent",
    "DisputeGame_BadUnit": lambda f: f"job {f['jobId']} has units 0..{f['numUnits'] - 1}, not {f['unitIndex']}",
    "DisputeGame_BadData": lambda f: (f"game {f['gameId']}: {f['length']} bytes are not the unit's committed output "
                                      f"(or empty, or over 65,536 bytes)"),
    "JobMarket_ChallengeWindowClosed": lambda f: f"job {f['jobId']}: the challenge window closed at {f['deadline']} (now {f['nowTs']})",
    "JobMarket_ChallengeWindowOpen": lambda f: f"job {f['jobId']}: the challenge window is open until {f['deadline']} (now {f['nowTs']})",
    "JobMarket_DisputesOpen": lambda f: f"job {f['jobId']}: {f['openDisputes']} dispute game(s) still open",
    "JobMarket_NoOpenDispute": lambda f: f"job {f['jobId']} has no open dispute",
    "JobMarket_NotExpired": lambda f: f"job {f['jobId']} has not expired: deadline {f['deadline']}, now {f['nowTs']}",
    "JobMarket_NothingToWithdraw": lambda f: f"nothing to withdraw from the market for {f['account']}",
    "JobMarket_TransferFailed": lambda f: f"paying {_eth(f['amount'])} to {f['to']} failed",
    "WorkerRegistry_NotMarket": lambda f: f"only the job market may call this (caller {f['caller']})",
    "WorkerRegistry_ZeroAmount": lambda f: "the amount must be greater than zero",
    "WorkerRegistry_AmountTooLarge": lambda f: f"amount {f['amount']} wei does not fit the stake accounting (2^96)",
    "WorkerRegistry_InsufficientFreeStake": lambda f: f"{f['worker']} has {_eth(f['free'])} free stake, {_eth(f['needed'])} needed",
    "WorkerRegistry_InsufficientLockedStake": lambda f: f"{f['worker']} has {_eth(f['locked'])} locked, {_eth(f['needed'])} needed",
    "WorkerRegistry_NothingToWithdraw": lambda f: (
        f"nothing to withdraw for {f['account']}"
        + (f" ({_eth(f['unbonding'])} unbonding until {f['readyAt']})" if f["unbonding"] else "")
    ),
    "WorkerRegistry_TransferFailed": lambda f: f"paying {_eth(f['amount'])} to {f['to']} failed",
    # Int8Verifier (reached through DisputeGame.step / proveOp; all the challenger's fault, 5.7.4)
    "Int8Verifier_BadDescriptor": lambda f: f"the one-step verifier rejects the op descriptor (rule {f['reason']})",
    "Int8Verifier_BadElement": lambda f: (f"element {f['elementIndex']} is outside the op output ({f['outCount']} "
                                          f"elements) or outside leaf {f['leafIndex']}"),
    "Int8Verifier_BadLeaf": lambda f: f"the revealed leaf has {f['length']} bytes, not one leaf",
    "Int8Verifier_BadProofsLength": lambda f: f"the step proofs are {f['length']} bytes, {f['needed']} needed",
    "Int8Verifier_BadSlotRoot": lambda f: (f"input {f['input']}: the proof of slot {f['index']} (kind {f['kind']}) "
                                           "does not match the committed root"),
    "Int8Verifier_BadRangeProof": lambda f: (f"input {f['input']}: the range proof of leaves {f['leafStart']}..{f['leafEnd']} "
                                             "does not verify"),
    "Int8Verifier_BadChannelParams": lambda f: f"bad requantization parameters (mult {f['mult']}, shift {f['shift']})",
}

ERRORS_BY_SELECTOR: dict[bytes, tuple[type[ContractRevert], list[str], list[str]]] = {}


def _abi_type(inp: dict) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in inp["components"])
        return f"({inner}){t[5:]}"
    return t


def _register_all() -> None:
    for contract in available():
        for entry in load_abi(contract):
            if entry.get("type") != "error":
                continue
            name = entry["name"]
            types = [_abi_type(i) for i in entry["inputs"]]
            names = [i["name"] for i in entry["inputs"]]
            selector = keccak(text=f"{name}({','.join(types)})")[:4]
            if selector in ERRORS_BY_SELECTOR:
                continue
            cls = type(name, (ContractRevert,), {
                "error_name": name, "field_names": tuple(names), "__module__": __name__,
                "__doc__": f"Solidity `error {name}({', '.join(f'{t} {n}' for t, n in zip(types, names, strict=True))})` ({contract}).",
            })
            globals()[name] = cls
            ERRORS_BY_SELECTOR[selector] = (cls, types, names)


_register_all()


def error_class(name: str) -> type[ContractRevert]:
    """The exception class of Solidity error `name` (KeyError if no ABI declares it)."""
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, ContractRevert) and cls.error_name == name):
        raise KeyError(name)
    return cls


def _norm(t: str, v: Any) -> Any:
    if t == "address":
        return to_checksum_address(v)
    if t.startswith("bytes") and isinstance(v, bytes | bytearray):
        return "0x" + bytes(v).hex()
    return v


def decode_revert(data: bytes | str | None, context: str = "") -> ChainError:
    """An exception for revert `data`; `context` (e.g. "claimJob(3)") prefixes the message."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x"))
    prefix = f"{context}: " if context else ""
    if not data or len(data) < 4:
        return UnknownRevert(f"{prefix}reverted without a reason")
    sel, body = bytes(data[:4]), bytes(data[4:])
    if sel == bytes.fromhex("08c379a0"):  # Error(string)
        return UnknownRevert(f"{prefix}reverted: {abi_decode(['string'], body)[0]}")
    if sel == bytes.fromhex("4e487b71"):  # Panic(uint256)
        return UnknownRevert(f"{prefix}panicked with code {hex(abi_decode(['uint256'], body)[0])}")
    known = ERRORS_BY_SELECTOR.get(sel)
    if known is None:
        return UnknownRevert(f"{prefix}reverted with unknown error 0x{data.hex()}")
    cls, types, names = known
    values = abi_decode(types, body)
    fields = {n: _norm(t, v) for n, t, v in zip(names, types, values, strict=True)}
    fmt = _MESSAGES.get(cls.error_name)
    text = fmt(fields) if fmt else f"{cls.error_name}({', '.join(f'{k}={v}' for k, v in fields.items())})"
    return cls(f"{prefix}{text}", fields)
