"""Int8Verifier's custom errors are in the shipped ABIs, so a verifier revert (reached through the
dispute game) decodes to a named error instead of "unknown error 0x..."."""

import json

import pytest
from eth_abi import encode
from eth_utils import keccak

from gpumesh.client.chain import errors
from gpumesh.client.chain.export_abi import REQUIRED, export


def _revert(signature: str, types: list[str], values: list) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


def test_a_verifier_error_decodes_to_its_named_class():
    exc = errors.decode_revert(_revert("Int8Verifier_BadProofsLength(uint256,uint256)", ["uint256", "uint256"],
                                       [96, 160]), "step(game 3, move 23)")
    assert type(exc).__name__ == "Int8Verifier_BadProofsLength"
    assert isinstance(exc, errors.error_class("Int8Verifier_BadProofsLength"))
    assert (exc.length, exc.needed) == (96, 160)
    assert str(exc).startswith("step(game 3, move 23): the step proofs are 96 bytes, 160 needed")


def test_signed_fields_and_every_verifier_error_is_known():
    exc = errors.decode_revert(_revert("Int8Verifier_BadChannelParams(int256,int256)", ["int256", "int256"], [-5, 40]))
    assert type(exc).__name__ == "Int8Verifier_BadChannelParams" and (exc.mult, exc.shift) == (-5, 40)
    for name in ("BadDescriptor", "BadElement", "BadLeaf", "BadProofsLength", "BadSlotRoot", "BadRangeProof",
                 "BadChannelParams"):
        assert errors.error_class(f"Int8Verifier_{name}").error_name == f"Int8Verifier_{name}"


def test_export_requires_the_verifier_artifact(tmp_path):
    assert "Int8Verifier" in REQUIRED
    out, dest = tmp_path / "out", tmp_path / "abi"
    dest.mkdir()
    abi = [{"type": "error", "name": "X_Y", "inputs": []}]
    for name in ("JobMarket", "WorkerRegistry"):
        (out / f"{name}.sol").mkdir(parents=True)
        (out / f"{name}.sol" / f"{name}.json").write_text(json.dumps({"abi": abi}))
    with pytest.raises(SystemExit, match="Int8Verifier.json is missing"):
        export(out, dest)
    (out / "Int8Verifier.sol").mkdir()
    (out / "Int8Verifier.sol" / "Int8Verifier.json").write_text(json.dumps({"abi": abi}))
    assert export(out, dest) == ["JobMarket", "WorkerRegistry", "Int8Verifier"]
    assert json.loads((dest / "Int8Verifier.json").read_text()) == abi
