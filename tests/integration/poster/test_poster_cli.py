"""The poster's CLI on a real anvil + the embedded IPFS node + torch, with an in-process worker:
`job post --program --inputs` uploads and posts, `job result` verifies the outputs against the
on-chain result root and scores the predictions, `job watch --json` follows the job to its end.
And Show 4: bad input through the CLI gives one line and a non-zero exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.client.core.program import inputs_root
from gpumesh.ipfs.store import MemoryStore
from gpumesh.node.runtime.files import load_program, load_units, save_units

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
MLP = REPO / "examples/digits/mlp"
INPUTS = REPO / "examples/digits/data/test_inputs_mlp.safetensors"
LABELS = REPO / "examples/digits/data/test_labels.json"
NAMES = "zero,one,two,three,four,five,six,seven,eight,nine"


def _post_args(gm, *extra: str) -> list[str]:
    return ["job", "post", "--reward", "0.5eth", "--stake", "1", "--bond", "1e17wei", "--challenge-window", "10m",
            "--account", "dev1", *gm.d, *extra]


def test_post_run_result_and_watch(env, gm, tmp_path):
    out, _ = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS), "--class-names", NAMES,
                            "--samples", "540", "--json"))
    posted = json.loads(out)
    job_id = posted["job_id"]
    # The roots the CLI computed, recomputed from the files with the pure core.
    b = load_program(MLP)
    units = load_units(INPUTS, b.program)
    assert posted["program_root"] == "0x" + b.program.root().hex()
    want_in = inputs_root(b.program, b.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in units])
    assert posted["inputs_root"] == "0x" + want_in.hex() and posted["units"] == 17
    spec = JobSpecDoc.from_bytes(env.store().cat(posted["spec_cid"]))
    assert spec.meta == {"labels": NAMES.split(","), "samples": 540}

    env.registry(2).stake(10**18)
    w = env.worker()
    market = env.market()
    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)

    out, _ = gm("job", "result", str(job_id), "-o", str(tmp_path / "res"), "--labels", str(LABELS), "--json", *gm.d)
    res = json.loads(out)
    truth = json.loads(LABELS.read_text())
    assert res["samples"] == 540 == len(truth) and res["state"] == "Submitted" and not res["final"]
    assert res["accuracy"] > 0.9
    assert res["accuracy"] == pytest.approx(np.mean(np.array(res["predictions"]) == np.array(truth)))
    assert (tmp_path / "res/outputs.safetensors").stat().st_size > 540 * 4
    out, _ = gm("job", "result", str(job_id), "-o", str(tmp_path / "res2"), "--labels", str(LABELS), "--show", "3",
                *gm.d)
    assert "verified against the on-chain result root" in out and "accuracy" in out
    first = NAMES.split(",")[res["predictions"][0]]
    assert first in out  # the class names from the spec's meta

    env.anvil.increase_time(601)
    env.drive(w, lambda: w.node.state.get("job", job_id)["status"] == "done")
    out, _ = gm("job", "watch", str(job_id), "--json", "--interval", "0.05", "--timeout", "30", *gm.d)
    lines = [json.loads(x) for x in out.splitlines()]
    events = [x["event"] for x in lines if x["kind"] == "event"]
    assert events == ["JobPosted", "JobClaimed", "ResultSubmitted", "JobFinalized"]
    assert lines[-1] == {"kind": "state", "job_id": job_id, "state": "Finalized", "deadline": lines[-1]["deadline"],
                         "open_disputes": 0}


def _one_line(err: str, starts: str) -> None:
    assert err.count("\n") == 1 and err.startswith("gpumesh: error: "), err
    assert starts in err, err


def _spec_job(env, gm, spec_bytes: bytes | None, *, pr: bytes, ir: bytes, units: int = 17) -> int:
    """Post a job whose spec document is `spec_bytes` (None: a CID nobody uploaded)."""
    cid = env.store().add_bytes(spec_bytes) if spec_bytes is not None else MemoryStore().add_bytes(b"nowhere")
    out, _ = gm(*_post_args(gm, "--spec-cid", cid, "--program-root", "0x" + pr.hex(), "--inputs-root",
                            "0x" + ir.hex(), "--units", str(units), "--json"))
    return json.loads(out)["job_id"]


def test_bad_input_is_one_line(env, gm, tmp_path):
    from gpumesh.node.jobs.publish import publish_job

    pub = publish_job(env.store(), MLP, INPUTS)
    s = pub.spec
    # malformed spec
    jid = _spec_job(env, gm, b'{"format": "gpumesh.job", "version": 1, "program": 3}', pr=s.program_root,
                    ir=s.inputs_root)
    _, err = gm("worker", "check", str(jid), *gm.d, code=5)
    _one_line(err, f"job {jid}: job spec field 'program' must be an object")
    # wrong CID: a spec nobody uploaded (the embedded node knows it has no such block)
    jid = _spec_job(env, gm, None, pr=s.program_root, ir=s.inputs_root)
    _, err = gm("worker", "check", str(jid), *gm.d, code=5)
    _one_line(err, "is not available on IPFS")
    # data not matching its root: spec and chain agree on a root the inputs do not give
    other = load_units(INPUTS, pub.bundle.program)[::-1]
    lie = inputs_root(pub.bundle.program, pub.bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in other])
    doc = JobSpecDoc(s.program_cid, s.inputs_cid, s.program_root, lie, 17)
    jid = _spec_job(env, gm, doc.to_bytes(), pr=s.program_root, ir=lie)
    _, err = gm("worker", "check", str(jid), *gm.d, code=5)
    _one_line(err, f"weights + inputs hash to inputs root 0x{s.inputs_root.hex()}, the chain says 0x{lie.hex()}")
    # the good job checks out
    jid = _spec_job(env, gm, s.to_bytes(), pr=s.program_root, ir=s.inputs_root)
    out, _ = gm("worker", "check", str(jid), *gm.d)
    assert out.startswith(f"job {jid}: data OK")
    # oversized: over a worker's limit, and a tensor bigger than the program declares
    _, err = gm("worker", "check", str(jid), "--max-inputs-mib", "0", *gm.d, code=5)
    _one_line(err, "is over the 0-byte limit")
    big = tmp_path / "big.safetensors"
    save_units(big, np.zeros((2, 64, 1, 8, 8), dtype=np.int8))
    _, err = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(big)), code=5)
    _one_line(err, "units tensor is int8[2, 64, 1, 8, 8], expected int8[U, 32, 1, 8, 8]")
    badprog = tmp_path / "badprog"
    shutil.copytree(MLP, badprog)
    (badprog / "program.json").write_text("{not json")
    _, err = gm(*_post_args(gm, "--program", str(badprog), "--inputs", str(INPUTS)), code=5)
    _one_line(err, "not JSON")
    # unreachable RPC and unreachable IPFS
    _, err = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS)), rpc="http://127.0.0.1:9", code=4)
    _one_line(err, "RPC at http://127.0.0.1:9 is unreachable")
    _, err = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS)), ipfs="/ip4/127.0.0.1/tcp/9", code=6)
    _one_line(err, "IPFS API at http://127.0.0.1:9 is unreachable")
    _, err = gm("worker", "run", "--account", "dev2", *gm.d, ipfs="/ip4/127.0.0.1/tcp/9", code=6)
    _one_line(err, "IPFS API at http://127.0.0.1:9 is unreachable")
    # nothing above was claimed, and usage errors are one line too
    assert all(j.state == JobState.OPEN for j in env.market().jobs())
    _, err = gm("job", "post", "--program", str(MLP), "--reward", "1", "--stake", "1", "--bond", "1", *gm.d, code=2)
    _one_line(err, "--program and --inputs go together")
    _, err = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS), "--units", "3"), code=2)
    _one_line(err, "--units 3, but")


def test_result_of_a_slashed_job_is_refused(env, gm, tmp_path):
    """A worker that leaves a data request unanswered is slashed: `job result` then refuses (exit 5)
    and writes nothing, instead of calling the outputs that were just proven wrong verified."""
    env.registry(2).stake(10**18)
    out, _ = gm(*_post_args(gm, "--program", str(MLP), "--inputs", str(INPUTS), "--json"))
    job_id = json.loads(out)["job_id"]
    w = env.worker()
    market = env.market()
    env.drive(w, lambda: market.get_job(job_id).state == JobState.SUBMITTED)
    w.close()  # the worker goes silent
    env.apps.remove(w)
    game = env.dn.game("poster", env.dn.w3())
    gid, _ = game.request_data(job_id, 0, market.get_job(job_id).dispute_bond)
    env.anvil.increase_time(game.clock_seconds() + 1)
    env.dn.game("other", env.dn.w3()).resolve_timeout(gid)
    assert market.get_job(job_id).state == JobState.SLASHED
    _, err = gm("job", "result", str(job_id), "-o", str(tmp_path / "res"), *gm.d, code=5)
    _one_line(err, f"job {job_id} is Slashed: a dispute game proved its submitted result wrong")
    assert not (tmp_path / "res").exists()
