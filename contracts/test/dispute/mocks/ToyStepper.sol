// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "../../../src/dispute/IOneStepVerifier.sol";
import {LibMerkle} from "../../../src/libraries/LibMerkle.sol";
import {Constants} from "../../../src/libraries/Constants.sol";

/// @title ToyStepper
/// @notice A one-step verifier for a toy op set, so the game is testable without the int8 one.
///         Python twin: tests/unit/dispute/toy.py (same descriptor, rule and proof encoding).
///         Descriptor (9 bytes): u32be outBytes || u32be inBytes || u8 addend.
///         Rule: out[i] = (in[i mod inBytes] + addend) mod 256, bytes as elements; `in` is the
///         unit's input tensor for op 0 and the previous op's output (trace slot t-1) otherwise.
///         proofs = abi.encode(bytes32 inRoot, bytes32[] rootPath, bytes32 weightsRoot,
///                             bytes inLeaf, bytes32[] rangeSiblings)
///         rootPath proves inRoot in the unit-inputs tree (op 0, with weightsRoot rebuilding the
///         inputs root) or at slot t-1 of the trace; the range proof gives the one input leaf.
contract ToyStepper is IOneStepVerifier {
    error ToyStepper_BadDescriptor(uint256 length);
    error ToyStepper_BadElement(uint256 elementIndex, uint64 leafIndex, uint256 outBytes);
    error ToyStepper_BadInputRoot();
    error ToyStepper_BadRangeProof();

    struct Proofs {
        bytes32 inRoot;
        bytes32[] rootPath;
        bytes32 weightsRoot;
        bytes inLeaf;
        bytes32[] rangeSiblings;
    }

    function decode(bytes calldata d) public pure returns (uint32 outBytes_, uint32 inBytes, uint8 addend) {
        if (d.length != 9) revert ToyStepper_BadDescriptor(d.length);
        outBytes_ = uint32(bytes4(d[0:4]));
        inBytes = uint32(bytes4(d[4:8]));
        addend = uint8(d[8]);
    }

    /// @inheritdoc IOneStepVerifier
    function outputBytes(bytes calldata descriptor) external pure returns (uint256 n) {
        (n,,) = decode(descriptor);
    }

    /// @inheritdoc IOneStepVerifier
    function verify(
        OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external pure returns (bool) {
        (uint32 outB, uint32 inB, uint8 addend) = decode(descriptor);
        if (elementIndex >= outB || elementIndex / Constants.LEAF_BYTES != ctx.leafIndex || inB == 0) {
            revert ToyStepper_BadElement(elementIndex, ctx.leafIndex, outB);
        }
        Proofs memory p = abi.decode(proofs, (Proofs));
        _checkInputRoot(ctx, p);
        uint8 expected = _inputByte(p, elementIndex % inB, inB);
        unchecked {
            expected += addend;
        }
        return uint8(leaf[elementIndex % Constants.LEAF_BYTES]) == expected;
    }

    /// @dev Input byte j, proven by a one-leaf range proof against the agreed input root.
    function _inputByte(Proofs memory p, uint256 j, uint256 inB) internal pure returns (uint8) {
        uint256 li = j / Constants.LEAF_BYTES;
        if (!LibMerkle.verifyRange(p.inRoot, LibMerkle.tensorDepth(inB), li, li + 1, p.inLeaf, p.rangeSiblings)) {
            revert ToyStepper_BadRangeProof();
        }
        return uint8(p.inLeaf[j % Constants.LEAF_BYTES]);
    }

    /// @dev The input tensor root is agreed: the unit's input (inputs root) for op 0, else trace
    ///      slot opIndex-1 of the worker's trace root (every slot before opIndex is agreed).
    function _checkInputRoot(OneStepContext calldata ctx, Proofs memory p) internal pure {
        bool ok;
        if (ctx.opIndex == 0) {
            ok = p.rootPath.length == LibMerkle.depthFor(ctx.numUnits) && ctx.unitIndex >> p.rootPath.length == 0;
            if (ok) {
                bytes32 unitInputs = LibMerkle.rootFromPath(p.inRoot, ctx.unitIndex, p.rootPath);
                ok = LibMerkle.inputsRoot(p.weightsRoot, unitInputs) == ctx.inputsRoot;
            }
        } else {
            ok = p.rootPath.length == LibMerkle.depthFor(ctx.numOps)
                && LibMerkle.verifyInclusion(ctx.traceRoot, p.inRoot, ctx.opIndex - 1, p.rootPath);
        }
        if (!ok) revert ToyStepper_BadInputRoot();
    }
}
