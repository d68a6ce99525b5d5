"""Custom-error decoding: selectors and field decoding checked against independently computed
values (selectors from `cast sig`, payloads encoded here with eth_abi)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak

from gpumesh.client.chain import errors
from gpumesh.client.chain.abi_store import ABI_DIR
from gpumesh.client.core.errors import ChainError

# `cast sig "<signature>"` output, recorded when writing this test (an independent implementation).
CAST_SELECTORS = {
    "JobMarket_WrongState": "cd9bbb24",
    "WorkerRegistry_InsufficientFreeStake": "4a80abe8",
    "JobMarket_InvalidSpec": "c40859eb",
}


def _abi_errors():
    for path in sorted(ABI_DIR.glob("*.json")):
        for e in json.loads(Path(path).read_text()):
            if e["type"] == "error":
                yield path.stem, e


def test_every_abi_error_has_one_class_subclassing_chain_error():
    names = {e["name"] for _, e in _abi_errors()}
    assert len(names) >= 20
    for name in names:
        cls = errors.error_class(name)
        assert issubclass(cls, errors.ContractRevert) and issubclass(cls, ChainError)
        assert cls.error_name == name
    assert len(errors.ERRORS_BY_SELECTOR) == len(names)


@pytest.mark.parametrize("name,selector", sorted(CAST_SELECTORS.items()))
def test_selectors_match_cast(name, selector):
    found = [sel for sel, (cls, _, _) in errors.ERRORS_BY_SELECTOR.items() if cls.error_name == name]
    assert found == [bytes.fromhex(selector)]


def test_wrong_state_decodes_fields_and_one_line_message():
    data = bytes.fromhex("cd9bbb24") + encode(["uint256", "uint8", "uint8"], [7, 2, 1])
    exc = errors.decode_revert(data, "claimJob(7)")
    assert type(exc) is errors.error_class("JobMarket_WrongState")
    assert exc.fields == {"jobId": 7, "actual": 2, "expected": 1}
    assert exc.jobId == 7
    assert str(exc) == "claimJob(7): job 7 is Claimed, this needs it Open"
    assert "\n" not in str(exc)


def test_address_fields_are_checksummed():
    worker = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    data = bytes.fromhex("4a80abe8") + encode(["address", "uint256", "uint256"], [worker, 10**18, 2 * 10**18])
    exc = errors.decode_revert("0x" + data.hex())
    assert exc.worker == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert exc.free == 10**18 and exc.needed == 2 * 10**18
    assert "1 ETH" in str(exc) and "2 ETH" in str(exc)


def test_every_error_decodes_from_an_encoded_payload():
    """Property: for each ABI error, encoding sample arguments and decoding gives the same fields."""
    samples = {"uint256": 5, "uint8": 3, "uint64": 99, "uint32": 4, "address": "0x" + "11" * 20,
               "string": "numUnits", "bytes32": b"\x22" * 32, "uint96": 7, "int256": -5}
    for _, e in _abi_errors():
        types = [i["type"] for i in e["inputs"]]
        sig = f"{e['name']}({','.join(types)})"
        values = [samples[t] for t in types]
        exc = errors.decode_revert(keccak(text=sig)[:4] + encode(types, values))
        assert exc.error_name == e["name"]
        assert len(exc.fields) == len(types)
        assert str(exc) and "\n" not in str(exc)


def test_standard_reverts_and_unknown_data():
    reason = bytes.fromhex("08c379a0") + encode(["string"], ["boom"])
    assert str(errors.decode_revert(reason)) == "reverted: boom"
    panic = bytes.fromhex("4e487b71") + encode(["uint256"], [0x11])
    assert str(errors.decode_revert(panic)) == "panicked with code 0x11"
    assert isinstance(errors.decode_revert(b""), errors.UnknownRevert)
    assert "unknown error 0xdeadbeef" in str(errors.decode_revert(bytes.fromhex("deadbeef")))


def test_data_request_errors_read_as_sentences():
    from eth_utils import function_signature_to_4byte_selector as sel

    cases = [("DisputeGame_NoResult(uint256)", ["uint256"], [1],
              "requestData(job 1, unit 3): job 1 has no submitted result to dispute or request data of"),
             ("DisputeGame_BadUnit(uint256,uint256,uint256)", ["uint256"] * 3, [1, 99, 17],
              "requestData(job 1, unit 3): job 1 has units 0..16, not 99")]
    for sig, types, values, want in cases:
        exc = errors.decode_revert(sel(sig) + encode(types, values), "requestData(job 1, unit 3)")
        assert str(exc) == want
