"""fetch_job / outputs against the in-memory ContentStore fake (proven honest by the shared store
contract suite in tests/integration/ipfs): good data passes, and every way the data can be wrong,
missing or too big is one JobDataError line naming what and where. Expected roots come from the
pure core (gpumesh.client.core.program), not from the code under test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpumesh.client.chain.types import Job, JobState
from gpumesh.client.core import merkle
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.client.core.program import inputs_root, result_root
from gpumesh.ipfs.cid import Cid
from gpumesh.ipfs.store import MemoryStore
from gpumesh.node.jobs.fetch import JobDataError, JobLimits, fetch_job
from gpumesh.node.jobs.outputs import outputs_bytes, verify_outputs
from gpumesh.node.runtime.files import load_program, load_units

REPO = Path(__file__).resolve().parents[3]
MLP = REPO / "examples/digits/mlp"
INPUTS = REPO / "examples/digits/data/test_inputs_mlp.safetensors"
Z = b"\0" * 32


@pytest.fixture(scope="module")
def bundle():
    return load_program(MLP)


@pytest.fixture(scope="module")
def units(bundle):
    return load_units(INPUTS, bundle.program)[:3]


def _units_file(units: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({"units": np.ascontiguousarray(units)})


class Posted:
    """One job's data in a MemoryStore and the on-chain Job that commits to it."""

    def __init__(self, tmp: Path, bundle, units, *, program_root=None, in_root=None, num_units=None,
                 inputs_bytes=None, program_dir=MLP) -> None:
        self.store = MemoryStore()
        folder = tmp / "prog"
        folder.mkdir(exist_ok=True)
        for f in ("program.json", "weights.safetensors"):
            if (program_dir / f).exists():
                shutil.copyfile(program_dir / f, folder / f)
        self.program_cid = self.store.add_path(folder)
        self.inputs_cid = self.store.add_bytes(inputs_bytes if inputs_bytes is not None else _units_file(units))
        true_in = inputs_root(bundle.program, bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in units])
        pr = program_root if program_root is not None else bundle.program.root()
        ir = in_root if in_root is not None else true_in
        n = num_units if num_units is not None else len(units)
        self.spec = JobSpecDoc(self.program_cid, self.inputs_cid, pr, ir, n)
        self.spec_cid = self.store.add_bytes(self.spec.to_bytes())
        self.job = Job(7, "0xposter", 10, 10, 1, 60, 60, 0, n, 0, JobState.OPEN, 0, "0x0", 0, pr, ir, Z, "0x0")


def test_good_data_validates(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    d = fetch_job(p.store, p.job, p.spec_cid)
    assert d.job_id == 7 and d.spec == p.spec
    assert np.array_equal(d.units, units)
    assert d.unit_input_roots == tuple(merkle.tensor_root(np.ascontiguousarray(u).tobytes()) for u in units)
    assert d.bundle.program.root() == bundle.program.root()


def _fails(p: Posted, *, spec_cid=None, limits=JobLimits()) -> JobDataError:
    with pytest.raises(JobDataError) as ei:
        fetch_job(p.store, p.job, spec_cid or p.spec_cid, limits)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("job 7: ")
    return ei.value


def test_spec_roots_must_equal_the_chain(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    with pytest.raises(JobDataError, match="the spec's inputs root 0x.* is not the on-chain 0x0202"):
        fetch_job(p.store, Job(**{**p.job.__dict__, "inputs_root": b"\2" * 32}), p.spec_cid)
    with pytest.raises(JobDataError, match="the spec's program root"):
        fetch_job(p.store, Job(**{**p.job.__dict__, "program_root": b"\3" * 32}), p.spec_cid)
    with pytest.raises(JobDataError, match="the spec says 3 units, the chain 4"):
        fetch_job(p.store, Job(**{**p.job.__dict__, "num_units": 4}), p.spec_cid)


def test_data_not_matching_the_committed_inputs_root(tmp_path, bundle, units):
    # The spec and the chain agree on a root that the data does not reproduce (other units).
    other = load_units(INPUTS, bundle.program)[3:6]
    lie = inputs_root(bundle.program, bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in other])
    p = Posted(tmp_path, bundle, units, in_root=lie)
    e = _fails(p)
    assert "hash to inputs root" in str(e) and lie.hex() in str(e) and not e.retryable


def test_program_not_matching_the_committed_program_root(tmp_path, bundle, units):
    cnn = load_program(REPO / "examples/digits/cnn")
    p = Posted(tmp_path, bundle, units, program_root=cnn.program.root())
    e = _fails(p)
    assert "has root" in str(e) and cnn.program.root().hex() in str(e)


def test_wrong_unit_count(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units, num_units=4)  # chain and spec say 4, the file holds 3
    assert "hold 3 units, the chain says 4" in str(_fails(p))


def test_missing_cids_are_retryable(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    missing = MemoryStore().add_bytes(b"never uploaded")
    e = _fails(p, spec_cid=missing)
    assert e.retryable and f"job spec {missing} is not available" in str(e)
    p2 = Posted(tmp_path, bundle, units)
    p2.store.blocks.pop(Cid.parse(p2.inputs_cid).digest)
    e = _fails(p2)
    assert e.retryable and f"inputs {p2.inputs_cid} is not available" in str(e)


def test_served_data_that_does_not_hash_to_its_cid(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    p.store.tamper(p.inputs_cid, b"evil")
    e = _fails(p)
    assert not e.retryable and f"inputs {p.inputs_cid} is unusable" in str(e)


def test_oversized_data_is_refused_before_it_is_read_whole(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    e = _fails(p, limits=JobLimits(max_inputs_bytes=1000))
    assert "over the 1000-byte limit" in str(e) and "inputs" in str(e)
    e = _fails(p, limits=JobLimits(max_weights_bytes=1000))
    assert "weights file" in str(e) and "over the 1000-byte limit" in str(e)
    assert "over this node's limit of 2" in str(_fails(p, limits=JobLimits(max_units=2)))


def test_malformed_spec_and_inputs(tmp_path, bundle, units):
    p = Posted(tmp_path, bundle, units)
    bad = p.store.add_bytes(b'{"format": "gpumesh.job", "version": 1}')
    assert "job spec field 'program' must be an object" in str(_fails(p, spec_cid=bad))
    notjson = p.store.add_bytes(b"\xff\xfe")
    assert "not JSON" in str(_fails(p, spec_cid=notjson))
    p2 = Posted(tmp_path, bundle, units, inputs_bytes=b"not a safetensors file")
    assert f"inputs {p2.inputs_cid}:" in str(_fails(p2))


def test_outputs_verify_against_the_result_root(bundle):
    rng = np.random.default_rng(1)
    outs = rng.integers(0, 10, size=(3, *bundle.program.output_type.shape)).astype(np.int32)
    rr = result_root([merkle.tensor_root(o.tobytes()) for o in outs])
    data = outputs_bytes(outs)
    assert np.array_equal(verify_outputs(data, bundle.program, rr, 3), outs)
    bad = outs.copy()
    bad[2, -1] ^= 1  # the last element of the last unit
    with pytest.raises(JobDataError, match="outputs hash to result root"):
        verify_outputs(outputs_bytes(bad), bundle.program, rr)
    with pytest.raises(JobDataError, match="outputs hold 3 units, the job has 4"):
        verify_outputs(data, bundle.program, rr, 4)
    with pytest.raises(JobDataError, match="outputs tensor is int8"):
        verify_outputs(outputs_bytes(outs.astype(np.int8)), bundle.program, rr)
    with pytest.raises(JobDataError, match="not a readable safetensors"):
        verify_outputs(b"junk", bundle.program, rr)
    assert json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["outputs"]["dtype"] == "I32"


def test_batched_unit_roots_equal_per_unit_tensor_roots(bundle, units):
    from gpumesh.node.jobs.fetch import unit_roots_of
    from gpumesh.node.jobs.outputs import unit_output_roots
    from gpumesh.node.runtime.files import ProgramError

    assert unit_roots_of(units, bundle) == tuple(merkle.tensor_root(u.tobytes()) for u in units)
    outs = np.random.default_rng(0).integers(-5, 5, (len(units), 32), dtype=np.int32)
    assert unit_output_roots(outs) == tuple(merkle.tensor_root(o.tobytes()) for o in outs)
    assert unit_output_roots(outs[:0]) == ()
    with pytest.raises(ProgramError, match="the program says"):
        unit_roots_of(units.astype(np.int32), bundle)
    with pytest.raises(ProgramError, match="the program says"):
        unit_roots_of(units[:, :16], bundle)


def test_unit_output_must_fit_an_on_chain_data_answer(bundle):
    from types import SimpleNamespace

    from gpumesh.client.core.game import MAX_UNIT_OUTPUT_BYTES
    from gpumesh.node.jobs.fetch import unit_output_too_large

    assert unit_output_too_large(bundle.program) is None  # the digits program: 4 bytes a sample
    at = SimpleNamespace(output_type=SimpleNamespace(nbytes=MAX_UNIT_OUTPUT_BYTES))
    over = SimpleNamespace(output_type=SimpleNamespace(nbytes=MAX_UNIT_OUTPUT_BYTES + 1))
    assert unit_output_too_large(at) is None
    why = unit_output_too_large(over)
    assert why is not None and "65537 bytes" in why and "65536" in why


def test_predictions_of_argmax_and_chunked_argmax_programs():
    from types import SimpleNamespace

    from gpumesh.client.core.ops.types import Opcode
    from gpumesh.node.jobs.results import JobResult

    def result(last: Opcode, outputs: np.ndarray, samples=None) -> JobResult:
        prog = SimpleNamespace(ops=[SimpleNamespace(desc=SimpleNamespace(opcode=last))])
        spec = SimpleNamespace(meta={} if samples is None else {"samples": samples})
        return JobResult(1, spec, prog, "cid", b"\0" * 32, outputs, b"")

    idx = np.array([[5, 131071], [7, 0]], dtype=np.int32)  # [units, samples]: class indices
    for op in (Opcode.ARGMAX, Opcode.PAIRARGMAX):
        assert result(op, idx).predictions().tolist() == [5, 131071, 7, 0]
    assert result(Opcode.PAIRARGMAX, idx, samples=3).predictions().tolist() == [5, 131071, 7]
    logits = np.array([[[1, 9, 3], [8, 0, 0]]], dtype=np.int8)  # no argmax op: argmax of the last axis
    assert result(Opcode.LINEAR, logits).predictions().tolist() == [1, 0]


class _CountingStore:
    """The MemoryStore, counting the reads of each path."""

    def __init__(self, store) -> None:
        self.store, self.reads = store, []

    def cat(self, cid, offset=0, length=None):
        self.reads.append(cid)
        return self.store.cat(cid, offset, length)


def test_a_program_is_fetched_and_validated_once_for_many_jobs(tmp_path, bundle, units):
    """With a ProgramCache, a second job of the same program folder reads only its spec and its
    inputs; its roots are still checked (a job whose inputs root does not match is refused)."""
    from gpumesh.node.jobs.fetch import ProgramCache

    p = Posted(tmp_path, bundle, units)
    store = _CountingStore(p.store)
    cache = ProgramCache()
    first = fetch_job(store, p.job, p.spec_cid, programs=cache)
    assert any(r.endswith("weights.safetensors") for r in store.reads)
    store.reads.clear()
    second = fetch_job(store, Job(**{**p.job.__dict__, "job_id": 8}), p.spec_cid, programs=cache)
    assert store.reads == [p.spec_cid, p.inputs_cid]  # no program.json, no weights
    assert second.bundle is first.bundle and second.unit_input_roots == first.unit_input_roots
    assert (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(JobDataError, match="inputs root"):
        fetch_job(store, Job(**{**p.job.__dict__, "inputs_root": b"\2" * 32}), p.spec_cid, programs=cache)


def test_the_program_cache_is_bounded_by_weight_bytes(bundle):
    from gpumesh.node.jobs.fetch import ProgramCache, ValidatedProgram

    vp = ValidatedProgram(bundle, ())
    cache = ProgramCache(max_bytes=2 * vp.nbytes, max_entries=16)
    for cid in ("a", "b", "c"):
        cache.put(cid, vp)
    assert cache.get("a") is None and cache.get("c") is vp and cache.get("b") is vp
    cache.put("d", vp)  # b was read after c: c is the least recently used now
    assert cache.get("c") is None and cache.get("b") is vp
