"""The poster's view of a finished job: find its outputs (the ResultSubmitted event), fetch them and
the program description from IPFS, verify them against the ON-CHAIN result root, and turn them into
predictions (class ids, named by the spec's meta `labels`, scored against true labels if given).

Used by `gpumesh job result` and the demo. Imports the IPFS port only through the store passed in;
the market client is passed in (no web3 import here).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpumesh.client.core.errors import ValidationError
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.client.core.ops.types import Opcode
from gpumesh.client.core.program import Program
from gpumesh.node.jobs.fetch import JobDataError, JobLimits, load_spec, read_bounded, spec_cid_of
from gpumesh.node.jobs.outputs import outputs_bytes, verify_outputs
from gpumesh.node.runtime.files import NP_DTYPE, PROGRAM_FILE
from gpumesh.node.runtime.textgen import generated_texts, generation_meta

ZERO32 = b"\0" * 32


@dataclass(frozen=True)
class JobResult:
    job_id: int
    spec: JobSpecDoc
    program: Program
    outputs_cid: str
    result_root: bytes
    outputs: np.ndarray  # verified [numUnits, *output.shape]
    raw: bytes  # the verified outputs file

    def predictions(self) -> np.ndarray:
        """One value per sample: the values of an argmax program (ending in argmax, or in its
        chunked form pairargmax, 5.7.7), else the argmax of the last axis (trimmed to the spec's
        meta `samples` when the poster padded the last unit)."""
        out = self.outputs
        if self.program.ops[-1].desc.opcode in (Opcode.ARGMAX, Opcode.PAIRARGMAX) or out.ndim == 1:
            preds = out.reshape(-1)
        else:
            preds = out.argmax(axis=-1).reshape(-1)
        n = self.spec.meta.get("samples")
        return preds[:n] if isinstance(n, int) and 0 < n <= len(preds) else preds

    def label_names(self) -> list[str] | None:
        names = self.spec.meta.get("labels")
        return [str(x) for x in names] if isinstance(names, list) else None

    def texts(self) -> list[str] | None:
        """A text-generation program's generated text per prompt (node/runtime/textgen.py), the
        real prompts only (the spec's meta `samples`); None for any other program."""
        if generation_meta(self.program.meta) is None:
            return None
        return generated_texts(self.program, self.outputs, self.spec.meta.get("samples"))


def outputs_cid_of(market, job_id: int, from_block: int = 0) -> str:
    """The outputs CID of the job's (last) ResultSubmitted event."""
    from gpumesh.client.chain.events import find_logs

    logs = find_logs(market.w3, market.contract.events.ResultSubmitted, {"jobId": int(job_id)}, from_block,
                     last_only=True)  # the newest, walking back from the head in bounded spans
    if not logs:
        raise JobDataError(f"job {job_id}: no result was submitted")
    return str(logs[-1]["args"]["outputsCid"])


#: JobResult.outputs_cid when the outputs were assembled from the worker's on-chain answers.
ON_CHAIN = "on-chain (DataServed)"


def fetch_result(store, market, job, from_block: int = 0, limits: JobLimits = JobLimits(),
                 served: Callable[[int], dict[int, bytes]] | None = None) -> JobResult:
    """Outputs of `job` (on-chain Job) verified against its on-chain result root. When IPFS does
    not serve the outputs file and `served(job_id)` (DisputeGameClient.served_data) holds every
    unit's output put on-chain by answered data requests, those bytes are used instead, verified
    against the same root."""
    jid = int(job.job_id)
    if job.result_root == ZERO32:
        raise JobDataError(f"job {jid} has no result yet (state {job.state.label})")
    spec = load_spec(store, spec_cid_of(market, jid, from_block), jid, limits)
    pj = read_bounded(store, f"{spec.program_cid}/{PROGRAM_FILE}", limits.max_program_json_bytes, "program file", jid)
    try:
        program = Program.from_json(json.loads(pj))
    except (ValueError, UnicodeDecodeError, ValidationError) as exc:
        raise JobDataError(f"job {jid}: program {spec.program_cid}: {exc}") from None
    if program.root() != job.program_root:
        raise JobDataError(f"job {jid}: program {spec.program_cid} is not the one the chain commits to")
    cid = outputs_cid_of(market, jid, from_block)
    out_t = program.output_type
    limit = job.num_units * out_t.nbytes + 4096  # the tensor plus a small safetensors header
    try:
        raw = read_bounded(store, cid, limit, "outputs", jid)
    except JobDataError as exc:
        units = served(jid) if served is not None and exc.retryable else {}
        if len(units) < job.num_units:
            if units:
                missing = sorted(set(range(job.num_units)) - set(units))
                raise JobDataError(f"{exc}; {len(units)} of {job.num_units} units were served on-chain, "
                                   f"missing {missing[:8]} (gpumesh job request-data)", retryable=True) from None
            raise
        raw, cid = outputs_bytes(_assemble(units, program.output_type, job.num_units)), ON_CHAIN
    try:
        outputs = verify_outputs(raw, program, job.result_root, job.num_units)
    except JobDataError as exc:
        raise JobDataError(f"job {jid}: outputs {cid}: {exc}") from None
    return JobResult(jid, spec, program, cid, job.result_root, outputs, raw)


def shard_meta(spec: JobSpecDoc) -> dict | None:
    """The spec's `shard` meta ({index, count, first_unit, units}) when the job is one shard of a
    sharded post (node/jobs/publish.publish_sharded), else None."""
    m = spec.meta.get("shard")
    if isinstance(m, dict) and all(isinstance(m.get(k), int) for k in ("index", "count", "first_unit", "units")):
        return m
    return None


@dataclass(frozen=True)
class ShardedResult:
    """Every shard of a sharded job, each verified against its OWN on-chain result root, in order."""

    first_job_id: int
    shards: tuple[JobResult, ...]

    @property
    def job_ids(self) -> list[int]:
        return [r.job_id for r in self.shards]

    @property
    def outputs(self) -> np.ndarray:
        return np.concatenate([r.outputs for r in self.shards], axis=0)

    def predictions(self) -> np.ndarray:
        return np.concatenate([r.predictions() for r in self.shards])

    def label_names(self) -> list[str] | None:
        return self.shards[0].label_names()

    def texts(self) -> list[str] | None:
        parts = [r.texts() for r in self.shards]
        return None if parts[0] is None else [t for p in parts for t in p]


def fetch_sharded_result(store, market, job, from_block: int = 0, limits: JobLimits = JobLimits(),
                         served: Callable[[int], dict[int, bytes]] | None = None) -> ShardedResult | None:
    """When `job` is a shard (its spec says so and the chain's JobsPosted event confirms the group
    and its poster), every shard's result, each verified against its own root; None for a job that
    is not a shard. A shard without a usable result (not submitted yet, Slashed, Expired) stops it
    with one error naming every such shard and its state."""
    jid = int(job.job_id)
    spec = load_spec(store, spec_cid_of(market, jid, from_block), jid, limits)
    meta = shard_meta(spec)
    if meta is None:
        return None
    first = jid - meta["index"]
    group = market.shard_group(first, from_block)
    if group is None or group[0] != meta["count"] or group[1].lower() != str(job.poster).lower():
        raise JobDataError(f"job {jid}: its spec says shard {meta['index']} of {meta['count']}, but the chain has no "
                           f"such postJobs group starting at job {first} by its poster")
    jobs = [market.get_job(first + i) for i in range(meta["count"])]
    missing = [f"{j.job_id} ({j.state.label})" for j in jobs
               if j.result_root == ZERO32 or j.state.label in ("Slashed", "Expired", "Cancelled")]
    if missing:
        raise JobDataError(f"job {first}: {len(missing)} of {len(jobs)} shards have no result to use: "
                           f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''} (a Slashed shard's "
                           "reward is refunded: gpumesh job withdraw)", retryable=True)
    return ShardedResult(first, tuple(fetch_result(store, market, j, from_block, limits, served) for j in jobs))


def _assemble(units: dict[int, bytes], out_t, n: int) -> np.ndarray:
    """[n, *output] from each unit's served bytes (zero bytes past a served end are the canonical
    padding the root already commits to)."""
    out = np.zeros((n, out_t.nbytes), dtype=np.uint8)
    for u in range(n):
        b = units[u][: out_t.nbytes]
        out[u, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out.view(NP_DTYPE[out_t.dtype]).reshape((n, *out_t.shape))


def accuracy(preds: np.ndarray, truth: list[int]) -> tuple[float, int]:
    n = min(len(preds), len(truth))
    if n == 0:
        return 0.0, 0
    return float(np.mean(np.asarray(preds[:n]) == np.asarray(truth[:n]))), n
