"""Job spec document: canonical bytes round-trip; each malformation is one clear error."""

import json

import pytest

from gpumesh.client.core.jobspec import MAX_SPEC_BYTES, JobSpecDoc, JobSpecError

CID0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
CID1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def doc(**kw):
    base = dict(program_cid=CID0, inputs_cid=CID1, program_root=b"\x01" * 32, inputs_root=b"\x02" * 32,
                num_units=4, min_gpu_memory_mib=2048, meta={"labels": list(range(10))})
    base.update(kw)
    return JobSpecDoc(**base)


def test_round_trip_and_canonical_bytes():
    d = doc()
    b = d.to_bytes()
    assert JobSpecDoc.from_bytes(b) == d
    # key order and whitespace of the input do not matter; the canonical form is unique
    pretty = json.dumps(json.loads(b), indent=4).encode()
    assert JobSpecDoc.from_bytes(pretty).to_bytes() == b


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda o: o.update(format="other"), "not a gpumesh job spec"),
        (lambda o: o.update(version=2), "unsupported job spec version 2"),
        (lambda o: o["program"].update(cid="QmNotACid"), "'program.cid' is not an IPFS CID"),
        (lambda o: o["inputs"].update(root="0x1234"), "'inputs.root' must be 0x"),
        (lambda o: o["inputs"].update(units=0), "'inputs.units' must be an integer"),
        (lambda o: o["inputs"].update(units=True), "'inputs.units' must be an integer"),
        (lambda o: o.pop("program"), "'program' must be an object"),
        (lambda o: o["requirements"].update(min_gpu_memory_mib=-1), "min_gpu_memory_mib"),
    ],
)
def test_malformed_specs(mutate, needle):
    o = json.loads(doc().to_bytes())
    mutate(o)
    with pytest.raises(JobSpecError, match=needle):
        JobSpecDoc.from_bytes(json.dumps(o).encode())


def test_not_json_and_oversized():
    with pytest.raises(JobSpecError, match="not JSON"):
        JobSpecDoc.from_bytes(b"{nope")
    with pytest.raises(JobSpecError, match="over the"):
        JobSpecDoc.from_bytes(b" " * (MAX_SPEC_BYTES + 1))
