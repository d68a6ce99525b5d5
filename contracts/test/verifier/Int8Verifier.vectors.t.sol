// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {VerifierBase} from "./VerifierBase.sol";
import {Int8Errors} from "../../src/dispute/int8/Int8Errors.sol";

/// @notice Int8Verifier against EVERY element of the shared op vectors (tests/vectors/ops_*.json,
///         values computed by the Python scalar reference): the worker's correct value is
///         accepted, a different value is detected; once with the inputs proven under the inputs
///         root (unit input + weights) and once with input 0 as an agreed trace slot.
contract Int8VerifierVectorsTest is VerifierBase {
    function _all(string memory op) internal view {
        string memory json = _vectors(op);
        uint256 nCases = vm.parseJsonUint(json, ".numCases");
        uint256 checked;
        for (uint256 c = 0; c < nCases; ++c) {
            uint256 nE = _len(json, _key(".cases", c, ".elements"));
            for (uint256 e = 0; e < nE; ++e) {
                for (uint256 t = 0; t < 2; ++t) {
                    Step memory s = _step(json, c, e, t == 1);
                    string memory what = string.concat(op, " case ", vm.toString(c), " element ", vm.toString(s.index));
                    assertTrue(_verify(s), string.concat(what, ": the reference value is accepted"));
                    _put(s.leaf, s.index, s.outDtype, _other(s.value, s.outDtype));
                    assertFalse(_verify(s), string.concat(what, ": a wrong value is detected"));
                    ++checked;
                }
            }
        }
        assertGt(checked, 0);
    }

    function test_Vectors_Linear() public view {
        _all("linear");
    }

    function test_Vectors_Requant() public view {
        _all("requant");
    }

    function test_Vectors_Add() public view {
        _all("add");
    }

    function test_Vectors_Relu() public view {
        _all("relu");
    }

    function test_Vectors_Im2col() public view {
        _all("im2col");
    }

    function test_Vectors_Maxpool() public view {
        _all("maxpool");
    }

    function test_Vectors_Avgpool() public view {
        _all("avgpool");
    }

    function test_Vectors_Argmax() public view {
        _all("argmax");
    }

    function test_Vectors_Reshape() public view {
        _all("reshape");
    }

    function test_Vectors_Transpose() public view {
        _all("transpose");
    }

    function test_Vectors_Chunkmax() public view {
        _all("chunkmax");
    }

    function test_Vectors_Pairargmax() public view {
        _all("pairargmax");
    }

    function test_Vectors_Chunksum() public view {
        _all("chunksum");
    }

    function test_Vectors_Sumrequant() public view {
        _all("sumrequant");
    }

    function test_Vectors_Matmul() public view {
        _all("matmul");
    }

    function test_Vectors_Lut() public view {
        _all("lut");
    }

    function test_Vectors_Mul() public view {
        _all("mul");
    }

    /// @notice Includes ids outside [0, V) (-1, V, int32 min and max): no table range, value 0.
    function test_Vectors_Gather() public view {
        _all("gather");
    }

    /// @notice Rows of all -128, all 127, one 127 among -128s, causal masks with offsets, a table
    ///         with entries to clamp, a row of 4,096 logits.
    function test_Vectors_Softmax() public view {
        _all("softmax");
    }

    /// @notice LayerNorm and RMSNorm: a constant row with eps 0 (sigma 0), an outlier, a ramp,
    ///         beta at the int32 extremes (wrap32), rows of 768 and 8,192.
    function test_Vectors_Layernorm() public view {
        _all("layernorm");
    }

    /// @notice Rope: pairs at +-255 against (cos, sin) entries of +-2^15 and beyond (clamped),
    ///         a real table read at a position offset up to its last row, heads [2, 3, 4, 8].
    function test_Vectors_Rope() public view {
        _all("rope");
    }

    /// @notice Topk: ties (lower index first), k = L, chunks with a short last chunk (padding),
    ///         pairs with int32 extremes (clamped), a row of 4,096.
    function test_Vectors_Topk() public view {
        _all("topk");
    }

    /// @notice Concat: a KV-cache step (the new row 8 leaves into each head), int32 tokens at the
    ///         int32 extremes, int8 along axis 0; each element opens one input only.
    function test_Vectors_Concat() public view {
        _all("concat");
    }

    /// @notice Slice: the last position of int32 logits, a middle range of axis 0, a whole axis.
    function test_Vectors_Slice() public view {
        _all("slice");
    }

    /// @notice outputBytes (the light decoding of proveOp) and validateDescriptor (the full one)
    ///         both give the vector's output byte length for every case.
    function test_OutputBytes_MatchVectors() public view {
        string[24] memory ops = [
            "linear",
            "requant",
            "add",
            "relu",
            "im2col",
            "maxpool",
            "avgpool",
            "argmax",
            "reshape",
            "transpose",
            "chunkmax",
            "pairargmax",
            "chunksum",
            "sumrequant",
            "matmul",
            "lut",
            "mul",
            "gather",
            "softmax",
            "layernorm",
            "rope",
            "topk",
            "concat",
            "slice"
        ];
        for (uint256 o = 0; o < ops.length; ++o) {
            string memory json = _vectors(ops[o]);
            uint256 nCases = vm.parseJsonUint(json, ".numCases");
            for (uint256 c = 0; c < nCases; ++c) {
                bytes memory d = vm.parseJsonBytes(json, _key(".cases", c, ".descriptor"));
                uint256 want = vm.parseJsonUint(json, _key(".cases", c, ".out.nbytes"));
                assertEq(verifier.outputBytes(d), want, ops[o]);
                assertEq(verifier.validateDescriptor(d), want, ops[o]);
            }
        }
    }

    /// @notice The one-step bounds (LibDescriptor.MAX_STEP_LEAVES, MAX_STEP_ELEMENTS, MAX_K) on the
    ///         shared tests/vectors/step_bounds.json: a descriptor at a bound is accepted with the
    ///         Python output size, one just over it reverts with the Python-side reason (the Python
    ///         validator is checked on the same file by tests/unit/core_program/test_descriptor.py).
    function test_StepBounds_MatchPython() public {
        string memory json = vm.readFile("tests/vectors/step_bounds.json");
        uint256 nCases = vm.parseJsonUint(json, ".numCases");
        uint256 accepted;
        for (uint256 c = 0; c < nCases; ++c) {
            bytes memory d = vm.parseJsonBytes(json, _key(".cases", c, ".descriptor"));
            uint256 reason = vm.parseJsonUint(json, _key(".cases", c, ".reason"));
            string memory note = vm.parseJsonString(json, _key(".cases", c, ".note"));
            if (reason == 0) {
                assertEq(verifier.validateDescriptor(d), vm.parseJsonUint(json, _key(".cases", c, ".outBytes")), note);
                ++accepted;
            } else {
                vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadDescriptor.selector, uint8(reason)));
                verifier.validateDescriptor(d);
            }
        }
        assertGt(accepted, 0);
        assertGt(nCases, accepted);
    }
}
