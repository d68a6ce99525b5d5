"""Fetching and validating a job's data: the spec document, the program folder and the inputs file,
from IPFS, each checked against the ON-CHAIN job before anyone acts on it.

    spec_cid = spec_cid_of(market, job_id)              # from the JobPosted event
    data = fetch_job(store, market.get_job(job_id), spec_cid)
    data.bundle, data.units, data.unit_input_roots      # ready for the Executor

Every byte comes through a verifying ContentStore (gpumesh.ipfs: each block hashed against its CID),
and every size is bounded (`JobLimits`) before it is read, so a hostile spec cannot make a worker
download or allocate without limit. The chain is the only trusted party: the spec's own roots are
compared with the job's, then recomputed from the data (program root, inputs root, unit count).
Any failure is one `JobDataError` line naming what mismatched, is missing, unreachable or too big.

Used by the worker (validate before claiming), the watchtower (re-execute) and the poster CLI.
Imports the pure core, the IPFS port and the runtime's file readers; never web3 (the market client
is passed in).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpumesh.client.core import merkle
from gpumesh.client.core.errors import GpumeshError, ValidationError
from gpumesh.client.core.game import MAX_UNIT_OUTPUT_BYTES
from gpumesh.client.core.jobspec import MAX_SPEC_BYTES, JobSpecDoc
from gpumesh.client.core.program import inputs_root
from gpumesh.ipfs.errors import IpfsError, IpfsTimeout, IpfsUnreachable, NotFound
from gpumesh.node.runtime.files import (
    PROGRAM_FILE,
    WEIGHTS_FILE,
    ProgramBundle,
    canonical_bytes,
    load_program,
    load_units,
)

MiB = 1 << 20


class JobDataError(ValidationError):
    """A job's off-chain data is missing, unreachable, oversized, malformed or does not match the
    chain. `retryable` is True when trying later may succeed (IPFS unreachable, timed out, or the
    content not found yet); a mismatch or malformed data never heals."""

    def __init__(self, message: str, retryable: bool = False, **context: object) -> None:
        super().__init__(message, **context)
        self.retryable = retryable


@dataclass(frozen=True)
class JobLimits:
    """What a node is willing to download and hold for one job (bytes, units)."""

    max_spec_bytes: int = MAX_SPEC_BYTES
    max_program_json_bytes: int = 4 * MiB
    max_weights_bytes: int = 1024 * MiB
    max_inputs_bytes: int = 1024 * MiB
    max_units: int = 1 << 20


@dataclass(frozen=True)
class JobData:
    job_id: int
    spec: JobSpecDoc
    bundle: ProgramBundle
    units: np.ndarray  # [numUnits, *input.shape] int8
    unit_input_roots: tuple[bytes, ...]


def posted_event(market, job_id: int, from_block: int = 0) -> dict:
    """The args of the job's JobPosted event (specCid, minGpuMemoryMiB, reward, poster)."""
    from gpumesh.client.chain.events import find_logs

    try:  # newest first, in bounded spans: an Open job was posted recently
        logs = find_logs(market.w3, market.contract.events.JobPosted, {"jobId": int(job_id)}, from_block,
                         last_only=True)
    except (ConnectionError, OSError) as exc:
        raise JobDataError(f"job {job_id}: cannot read its JobPosted event ({type(exc).__name__})",
                           retryable=True) from None
    if not logs:
        raise JobDataError(f"job {job_id}: no JobPosted event (no such job on this market?)")
    return dict(logs[0]["args"])


def spec_cid_of(market, job_id: int, from_block: int = 0) -> str:
    """The spec CID from the job's JobPosted event (the chain does not store it: docs/protocol.md section 4
    4.4). `market` is a gpumesh.client.chain.contracts.JobMarketClient."""
    return str(posted_event(market, job_id, from_block)["specCid"])


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def read_bounded(store, cid: str, limit: int, what: str, job_id: int) -> bytes:
    """`cid`'s bytes, refusing anything over `limit` after reading at most limit + 1 of them."""
    try:
        data = store.cat(cid, 0, limit + 1)
    except (IpfsUnreachable, IpfsTimeout) as exc:
        raise JobDataError(f"job {job_id}: {what} {cid}: {exc}", retryable=True) from None
    except NotFound:
        raise JobDataError(f"job {job_id}: {what} {cid} is not available on IPFS (not found)",
                           retryable=True) from None
    except IpfsError as exc:  # CidMismatch, MalformedDag, a directory where a file belongs...
        raise JobDataError(f"job {job_id}: {what} {cid} is unusable: {exc}") from None
    if len(data) > limit:
        raise JobDataError(f"job {job_id}: {what} {cid} is over the {limit}-byte limit")
    return data


def load_spec(store, spec_cid: str, job_id: int, limits: JobLimits = JobLimits()) -> JobSpecDoc:
    raw = read_bounded(store, spec_cid, limits.max_spec_bytes, "job spec", job_id)
    try:
        return JobSpecDoc.from_bytes(raw)
    except ValidationError as exc:
        raise JobDataError(f"job {job_id}: {exc}") from None


def check_spec_against_job(spec: JobSpecDoc, job) -> None:
    """The spec must name exactly the roots and unit count the chain holds."""
    jid = job.job_id
    if spec.program_root != job.program_root:
        raise JobDataError(f"job {jid}: the spec's program root {_hex(spec.program_root)} is not the "
                           f"on-chain {_hex(job.program_root)}")
    if spec.inputs_root != job.inputs_root:
        raise JobDataError(f"job {jid}: the spec's inputs root {_hex(spec.inputs_root)} is not the "
                           f"on-chain {_hex(job.inputs_root)}")
    if spec.num_units != job.num_units:
        raise JobDataError(f"job {jid}: the spec says {spec.num_units} units, the chain {job.num_units}")


def unit_roots_of(units: np.ndarray, bundle: ProgramBundle) -> tuple[bytes, ...]:
    t = bundle.program.input.type
    if len(units):
        canonical_bytes(units[0], t)  # raises ProgramError unless dtype and shape are the program's
    return tuple(merkle.tensor_roots(np.ascontiguousarray(units)))  # batched (merkle.tensor_roots)


def unit_output_too_large(program) -> str | None:
    """Why a job of `program` could not be posted: one unit's output must fit a data request's
    on-chain answer (MAX_UNIT_OUTPUT_BYTES, docs/protocol.md 5.8), or a withheld output could
    never be proven available. None when it fits."""
    n = program.output_type.nbytes
    if n > MAX_UNIT_OUTPUT_BYTES:
        return (f"one unit's output is {n} bytes, above the {MAX_UNIT_OUTPUT_BYTES}-byte limit of an on-chain "
                f"data answer (use fewer samples per unit)")
    return None


@dataclass(frozen=True)
class ValidatedProgram:
    """A program folder fetched and validated once: the bundle and its weights' tensor roots (the
    weights' share of every inputs root), keyed by the folder's CID."""

    bundle: ProgramBundle
    weight_roots: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.bundle.weight_bytes.values())


class ProgramCache:
    """Validated programs by program CID, least recently used first out, bounded by weight bytes.

    Keyed by the folder's CID, not the program root: the program root commits to the ops and the
    weights' types, while the weights' values enter each job's inputs root; one CID names exactly
    one folder's bytes (every read is verified against it), so a cached entry is what a fresh
    download would give. Many jobs (or shards) of one program then cost one download, one parse
    and one hash of the weights. Used by the worker; `fetch_job` works without one."""

    def __init__(self, max_bytes: int = 2 * 1024 * MiB, max_entries: int = 16) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: dict[str, ValidatedProgram] = {}
        self.hits = self.misses = 0

    def get(self, program_cid: str) -> ValidatedProgram | None:
        e = self._entries.pop(program_cid, None)
        if e is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries[program_cid] = e  # most recent last
        return e

    def put(self, program_cid: str, entry: ValidatedProgram) -> None:
        self._entries.pop(program_cid, None)
        self._entries[program_cid] = entry
        while len(self._entries) > self.max_entries or \
                (len(self._entries) > 1 and sum(e.nbytes for e in self._entries.values()) > self.max_bytes):
            self._entries.pop(next(iter(self._entries)))


def fetch_program(store, spec: JobSpecDoc, jid: int, limits: JobLimits = JobLimits()) -> ValidatedProgram:
    """The spec's program folder, fetched, parsed and checked on its own (no job roots yet)."""
    pj = read_bounded(store, f"{spec.program_cid}/{PROGRAM_FILE}", limits.max_program_json_bytes,
                      "program file", jid)
    with tempfile.TemporaryDirectory(prefix=f"gpumesh-job{jid}-") as tmp:
        folder = Path(tmp) / "program"
        folder.mkdir()
        (folder / PROGRAM_FILE).write_bytes(pj)
        bundle = _load_bundle(store, spec, folder, jid, limits)
    if (why := unit_output_too_large(bundle.program)) is not None:
        raise JobDataError(f"job {jid}: program {spec.program_cid}: {why}")
    roots = tuple(merkle.tensor_root(bundle.weight_bytes[w.name]) for w in bundle.program.weights)
    return ValidatedProgram(bundle, roots)


def fetch_job(store, job, spec_cid: str, limits: JobLimits = JobLimits(),
              programs: ProgramCache | None = None) -> JobData:
    """Fetch and validate everything `job` (an on-chain gpumesh.client.chain.types.Job) needs;
    the program folder from `programs` when it holds the spec's program CID."""
    jid = int(job.job_id)
    if job.num_units > limits.max_units:
        raise JobDataError(f"job {jid}: {job.num_units} units, over this node's limit of {limits.max_units}")
    spec = load_spec(store, spec_cid, jid, limits)
    check_spec_against_job(spec, job)
    vp = programs.get(spec.program_cid) if programs is not None else None
    if vp is None:
        vp = fetch_program(store, spec, jid, limits)
        if programs is not None:
            programs.put(spec.program_cid, vp)
    bundle = vp.bundle
    if bundle.program.root() != job.program_root:
        raise JobDataError(f"job {jid}: program {spec.program_cid} has root {_hex(bundle.program.root())}, "
                           f"the chain says {_hex(job.program_root)}")
    raw_inputs = read_bounded(store, spec.inputs_cid, limits.max_inputs_bytes, "inputs", jid)
    with tempfile.TemporaryDirectory(prefix=f"gpumesh-job{jid}-") as tmp:
        (Path(tmp) / "inputs.safetensors").write_bytes(raw_inputs)
        try:
            units = np.array(load_units(Path(tmp) / "inputs.safetensors", bundle.program), copy=True)
        except GpumeshError as exc:
            raise JobDataError(f"job {jid}: inputs {spec.inputs_cid}: {_detail(exc)}") from None
    if len(units) != job.num_units:
        raise JobDataError(f"job {jid}: inputs {spec.inputs_cid} hold {len(units)} units, the chain says "
                           f"{job.num_units}")
    roots = unit_roots_of(units, bundle)
    got = merkle.inputs_root(list(vp.weight_roots), list(roots))
    if got != job.inputs_root:
        raise JobDataError(f"job {jid}: weights + inputs hash to inputs root {_hex(got)}, the chain says "
                           f"{_hex(job.inputs_root)}")
    return JobData(jid, spec, bundle, units, roots)


def _load_bundle(store, spec: JobSpecDoc, folder: Path, jid: int, limits: JobLimits) -> ProgramBundle:
    import json

    try:
        declared = json.loads((folder / PROGRAM_FILE).read_bytes()).get("weights", [])
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise JobDataError(f"job {jid}: program {spec.program_cid}: {PROGRAM_FILE} is not a JSON object "
                           f"({type(exc).__name__})") from None
    if declared:  # a program without weights has no weights file
        w = read_bounded(store, f"{spec.program_cid}/{WEIGHTS_FILE}", limits.max_weights_bytes,
                         "weights file", jid)
        (folder / WEIGHTS_FILE).write_bytes(w)
    try:
        return load_program(folder)
    except GpumeshError as exc:
        raise JobDataError(f"job {jid}: program {spec.program_cid}: {_detail(exc)}") from None


def _detail(exc: Exception) -> str:
    # Runtime errors name the temporary file; the CID already says where the data came from.
    return str(exc).split(": ", 1)[-1] if "gpumesh-job" in str(exc) else str(exc)


def check_inputs_root(bundle: ProgramBundle, units: np.ndarray) -> bytes:
    """The inputs root of a program's weights and an inputs tensor (the poster's side)."""
    t = bundle.program.input.type
    return inputs_root(bundle.program, bundle.weight_bytes,
                       [canonical_bytes(np.ascontiguousarray(u), t) for u in units])
