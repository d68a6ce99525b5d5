// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {VerifierBase} from "./VerifierBase.sol";
import {Int8Errors} from "../../src/dispute/int8/Int8Errors.sol";
import {LibDescriptor as LD} from "../../src/dispute/int8/LibDescriptor.sol";
import {LibMerkle} from "../../src/libraries/LibMerkle.sol";
import {Constants} from "../../src/libraries/Constants.sol";

/// @notice Every revert of Int8Verifier (the challenger's faults) and hand-made descriptors for
///         every Int8Verifier_BadDescriptor reason. The honest twin of each case verifies, so each
///         revert is caused by the one field the test breaks.
contract Int8VerifierTest is VerifierBase {
    string internal linearJson;

    function setUp() public override {
        super.setUp();
        linearJson = _vectors("linear");
    }

    /// @dev A per-channel linear element (4 inputs: x, W, bias, qp), inputs-root variant.
    function _linear(bool viaTrace) internal view returns (Step memory s) {
        uint256 nCases = vm.parseJsonUint(linearJson, ".numCases");
        for (uint256 c = 0; c < nCases; ++c) {
            if (_len(linearJson, _key(".cases", c, ".inputs")) == 4) return _step(linearJson, c, 1, viaTrace);
        }
        revert("no per-channel linear vector");
    }

    function _expectDescriptor(uint8 reason) internal {
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadDescriptor.selector, reason));
    }

    // ================================================================ honest baselines

    function test_Baseline_LinearVerifies() public view {
        assertTrue(_verify(_linear(false)));
        assertTrue(_verify(_linear(true)));
    }

    // ================================================================ element and leaf

    function test_RevertWhen_ElementOutsideTheRevealedLeaf() public {
        Step memory s = _linear(false);
        s.ctx.leafIndex += 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                Int8Errors.Int8Verifier_BadElement.selector, s.index, verifier.validateDescriptor(s.descriptor), s.ctx.leafIndex
            )
        );
        _verify(s);
    }

    function test_RevertWhen_ElementOutsideTheTensor() public {
        Step memory s = _linear(false);
        uint256 count = verifier.validateDescriptor(s.descriptor); // int8 output: bytes == elements
        s.index = count; // first padding element, same leaf when count % LEAF_BYTES != 0
        s.ctx.leafIndex = uint64(count / Constants.LEAF_BYTES);
        vm.expectRevert(
            abi.encodeWithSelector(Int8Errors.Int8Verifier_BadElement.selector, count, count, s.ctx.leafIndex)
        );
        _verify(s);
    }

    function test_RevertWhen_LeafIsNotLeafBytesLong() public {
        Step memory s = _linear(false);
        s.leaf = bytes.concat(s.leaf, hex"00");
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadLeaf.selector, Constants.LEAF_BYTES + 1));
        _verify(s);
    }

    // ================================================================ proofs

    function test_RevertWhen_ProofsTruncated() public {
        Step memory s = _linear(false);
        uint256 n = s.proofs.length;
        assembly {
            mstore(mload(add(s, 0xa0)), sub(n, 1)) // s.proofs.length -= 1
        }
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadProofsLength.selector, n - 1, n));
        _verify(s);
    }

    function test_RevertWhen_ProofsHaveTrailingBytes() public {
        Step memory s = _linear(false);
        uint256 n = s.proofs.length;
        s.proofs = bytes.concat(s.proofs, hex"00");
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadProofsLength.selector, n + 1, n));
        _verify(s);
    }

    function test_RevertWhen_EmptyProofs() public {
        Step memory s = _linear(false);
        s.proofs = "";
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadProofsLength.selector, 0, 32));
        _verify(s);
    }

    /// @dev Offset of the first range's leaves: slotRoot + root path of input 0 (unit input).
    function _firstLeavesOffset(Step memory s) internal pure returns (uint256) {
        return 32 + 32 * (LibMerkle.depthFor(s.ctx.numUnits) + 1);
    }

    function test_RevertWhen_RangeLeafTampered() public {
        Step memory s = _linear(false);
        uint256 off = _firstLeavesOffset(s);
        s.proofs[off + 5] = bytes1(uint8(s.proofs[off + 5]) ^ 1);
        vm.expectPartialRevert(Int8Errors.Int8Verifier_BadRangeProof.selector);
        _verify(s);
    }

    function test_RevertWhen_RangeSiblingTampered() public {
        Step memory s = _linear(false);
        // the last 32 bytes are the qp range's last sibling or, at depth 0, leaves: either way the
        // qp range proof (input 3) fails
        s.proofs[s.proofs.length - 1] = bytes1(uint8(s.proofs[s.proofs.length - 1]) ^ 1);
        vm.expectPartialRevert(Int8Errors.Int8Verifier_BadRangeProof.selector);
        _verify(s);
    }

    function test_RevertWhen_SlotRootWrong() public {
        Step memory s = _linear(false);
        s.proofs[0] = bytes1(uint8(s.proofs[0]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 1, 0));
        _verify(s);
    }

    function test_RevertWhen_RootPathWrong() public {
        Step memory s = _linear(false);
        s.proofs[40] = bytes1(uint8(s.proofs[40]) ^ 1); // inside the first path element
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 1, 0));
        _verify(s);
    }

    function test_RevertWhen_InputsRootIsNotTheAgreedOne() public {
        Step memory s = _linear(false);
        s.ctx.inputsRoot = keccak256("another job");
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 1, 0));
        _verify(s);
    }

    function test_RevertWhen_TraceRootIsNotTheAgreedOne() public {
        Step memory s = _linear(true);
        s.ctx.traceRoot = keccak256("another trace");
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 2, X_SLOT));
        _verify(s);
    }

    function test_RevertWhen_TraceSlotNotBeforeTheDisputedOp() public {
        Step memory s = _linear(true);
        s.ctx.opIndex = X_SLOT; // slot X_SLOT is the disputed op itself: not agreed
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 2, X_SLOT));
        _verify(s);
    }

    function test_RevertWhen_WeightIndexOutsideTheProgram() public {
        Step memory s = _linear(false);
        s.ctx.numWeights = 2; // weight index 2 (input 3, the qp table) no longer exists
        // input 1 (weight 0) is checked first; with 2 weights its path is one level shorter, so
        // the blob no longer lines up: the first failure is weight 0's root.
        vm.expectPartialRevert(Int8Errors.Int8Verifier_BadSlotRoot.selector);
        _verify(s);
    }

    function test_RevertWhen_UnitIndexOutsideTheJob() public {
        Step memory s = _linear(false);
        s.ctx.unitIndex = s.ctx.numUnits;
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadSlotRoot.selector, 0, 1, s.ctx.unitIndex));
        _verify(s);
    }

    // ================================================================ hand-made descriptors

    function _tt(uint8 dtype, uint8 rank, uint32 d0, uint32 d1, uint32 d2, uint32 d3)
        internal
        pure
        returns (bytes memory)
    {
        return abi.encodePacked(dtype, rank, d0, d1, d2, d3);
    }

    function _slot(uint8 kind, uint32 index, bytes memory tt) internal pure returns (bytes memory) {
        return abi.encodePacked(kind, index, tt);
    }

    /// @dev relu int8[4] from the unit input: opcode 4, one slot, out, zp.
    function _relu() internal pure returns (bytes memory) {
        bytes memory t = _tt(1, 1, 4, 1, 1, 1);
        return abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t), t, int8(0));
    }

    /// @dev requant int32[2] -> int8[2], per-tensor (mult 1, shift 1).
    function _requant(uint8 mode, int32 mult, uint8 shift, int8 lo, int8 hi) internal pure returns (bytes memory) {
        return abi.encodePacked(
            uint8(2), uint8(1), _slot(1, 0, _tt(2, 1, 2, 1, 1, 1)), _tt(1, 1, 2, 1, 1, 1), mode, mult, shift, int8(0), lo, hi
        );
    }

    function test_Descriptor_HandMadeOnesDecode() public view {
        assertEq(verifier.validateDescriptor(_relu()), 4);
        assertEq(verifier.validateDescriptor(_requant(1, 1, 1, -128, 127)), 2);
    }

    function test_RevertWhen_DescriptorLengthWrong() public {
        _expectDescriptor(LD.R_LENGTH);
        verifier.validateDescriptor(hex"04");
        _expectDescriptor(LD.R_LENGTH);
        verifier.validateDescriptor(bytes.concat(_relu(), hex"00"));
        bytes memory d = _relu();
        assembly {
            mstore(d, sub(mload(d), 1))
        }
        _expectDescriptor(LD.R_LENGTH);
        verifier.validateDescriptor(d);
    }

    function test_RevertWhen_OpcodeUnknown() public {
        bytes memory d = _relu();
        d[0] = 0x00;
        _expectDescriptor(LD.R_OPCODE);
        verifier.validateDescriptor(d);
        d[0] = bytes1(uint8(LD.OP_LAST + 1));
        _expectDescriptor(LD.R_OPCODE);
        verifier.validateDescriptor(d);
    }

    function test_RevertWhen_SlotKindUnknownOrUnitIndexNotZero() public {
        bytes memory d = _relu();
        d[2] = 0x03; // kind 3
        _expectDescriptor(LD.R_SLOT);
        verifier.validateDescriptor(d);
        d = _relu();
        d[6] = 0x01; // UNIT_INPUT index 1
        _expectDescriptor(LD.R_SLOT);
        verifier.validateDescriptor(d);
    }

    function test_RevertWhen_TensorTypeNonCanonical() public {
        bytes memory t4 = _tt(1, 1, 4, 1, 1, 1);
        bytes[5] memory bad = [
            _tt(3, 1, 4, 1, 1, 1), // dtype 3
            _tt(1, 0, 4, 1, 1, 1), // rank 0
            _tt(1, 5, 4, 1, 1, 1), // rank 5
            _tt(1, 1, 4, 2, 1, 1), // unused dim not 1
            _tt(1, 2, 4, 0, 1, 1) //  used dim 0
        ];
        for (uint256 i = 0; i < bad.length; ++i) {
            _expectDescriptor(LD.R_TYPE);
            verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, bad[i]), t4, int8(0)));
            _expectDescriptor(LD.R_TYPE);
            verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t4), bad[i], int8(0)));
        }
    }

    function test_RevertWhen_RequantBlockInvalid() public {
        bytes[7] memory bad = [
            _requant(3, 1, 1, -128, 127), //          unknown mode
            _requant(0, 1, 1, -128, 127), //          mode none on requant (and fields set)
            _requant(1, 1, 0, -128, 127), //          shift 0
            _requant(1, 1, 63, -128, 127), //         shift 63
            _requant(1, -1, 1, -128, 127), //         negative multiplier
            _requant(1, 1, 1, 5, 4), //               lo > hi
            _requant(2, 1, 0, -128, 127) //           per-channel with inline mult (and 1 input)
        ];
        for (uint256 i = 0; i < bad.length; ++i) {
            // per-channel with one input also breaks the input count; any rejection is right, the
            // reason names the first rule checked
            vm.expectPartialRevert(Int8Errors.Int8Verifier_BadDescriptor.selector);
            verifier.validateDescriptor(bad[i]);
        }
        _expectDescriptor(LD.R_REQUANT);
        verifier.validateDescriptor(_requant(1, 1, 63, -128, 127));
    }

    function test_RevertWhen_InputCountWrong() public {
        bytes memory t = _tt(1, 1, 4, 1, 1, 1);
        _expectDescriptor(LD.R_INPUT_COUNT);
        verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(2), _slot(1, 0, t), _slot(0, 0, t), t, int8(0)));
    }

    function test_RevertWhen_InputTypeBreaksTheOpRule() public {
        bytes memory t32 = _tt(2, 1, 4, 1, 1, 1);
        _expectDescriptor(LD.R_INPUT_TYPE);
        verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t32), t32, int8(0))); // relu int32
    }

    function test_RevertWhen_AttributeOutOfRange() public {
        bytes memory t = _tt(1, 2, 2, 3, 1, 1);
        // transpose with perm (0, 0, 2, 3): not a permutation
        _expectDescriptor(LD.R_ATTR);
        verifier.validateDescriptor(abi.encodePacked(uint8(10), uint8(1), _slot(1, 0, t), t, uint8(0), uint8(0), uint8(2), uint8(3)));
        // transpose with perm (1, 0, 3, 2): unused entries not their own index
        _expectDescriptor(LD.R_ATTR);
        verifier.validateDescriptor(
            abi.encodePacked(uint8(10), uint8(1), _slot(1, 0, t), _tt(1, 2, 3, 2, 1, 1), uint8(1), uint8(0), uint8(3), uint8(2))
        );
        // maxpool with kernel 0
        bytes memory img = _tt(1, 4, 1, 3, 3, 1);
        _expectDescriptor(LD.R_ATTR);
        verifier.validateDescriptor(
            abi.encodePacked(uint8(6), uint8(1), _slot(1, 0, img), img, uint16(0), uint16(1), uint16(1), uint16(1), uint16(0), uint16(0))
        );
    }

    function test_RevertWhen_DeclaredOutputDiffersFromTheRule() public {
        bytes memory t = _tt(1, 1, 4, 1, 1, 1);
        _expectDescriptor(LD.R_OUTPUT);
        verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t), _tt(1, 1, 5, 1, 1, 1), int8(0)));
    }

    function test_RevertWhen_TensorAbove2Pow28Bytes() public {
        bytes memory t = _tt(1, 2, 1 << 14, (1 << 14) + 1, 1, 1);
        _expectDescriptor(LD.R_TOO_LARGE);
        verifier.validateDescriptor(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t), t, int8(0)));
    }

    /// @notice outputBytes (proveOp's light decoding) rejects what stops it reading the declared
    ///         output: bad length, unknown opcode, non-canonical output type, above 2^28 bytes.
    function test_OutputBytes_RejectsWhatHidesTheOutputType() public {
        _expectDescriptor(LD.R_LENGTH);
        verifier.outputBytes(hex"04");
        _expectDescriptor(LD.R_LENGTH);
        verifier.outputBytes(bytes.concat(_relu(), hex"00"));
        bytes memory d = _relu();
        d[0] = bytes1(uint8(LD.OP_LAST + 1));
        _expectDescriptor(LD.R_OPCODE);
        verifier.outputBytes(d);
        bytes memory t4 = _tt(1, 1, 4, 1, 1, 1);
        _expectDescriptor(LD.R_TYPE);
        verifier.outputBytes(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t4), _tt(1, 1, 4, 2, 1, 1), int8(0)));
        bytes memory big = _tt(1, 2, 1 << 14, (1 << 14) + 1, 1, 1);
        _expectDescriptor(LD.R_TOO_LARGE);
        verifier.outputBytes(abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, big), big, int8(0)));
    }

    /// @notice What outputBytes leaves to verify: a descriptor with a bad slot, a bad input type, a
    ///         bad attribute or a declared output off the rule gives its declared size there, and
    ///         verify rejects it before reading any proof.
    function test_OutputBytes_LeavesTheRulesToVerify() public {
        bytes memory t = _tt(1, 1, 4, 1, 1, 1);
        bytes memory t32 = _tt(2, 1, 4, 1, 1, 1);
        bytes[4] memory bad = [
            abi.encodePacked(uint8(4), uint8(1), _slot(3, 0, t), t, int8(0)), //                 slot kind 3
            abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t32), t32, int8(0)), //             relu of int32
            abi.encodePacked(uint8(4), uint8(1), _slot(1, 0, t), _tt(1, 1, 5, 1, 1, 1), int8(0)), // out [5]
            abi.encodePacked(uint8(4), uint8(2), _slot(1, 0, t), _slot(0, 0, t), t, int8(0)) //   two inputs
        ];
        uint256[4] memory sizes = [uint256(4), 16, 5, 4];
        uint8[4] memory reasons = [LD.R_SLOT, LD.R_INPUT_TYPE, LD.R_OUTPUT, LD.R_INPUT_COUNT];
        Step memory s = _linear(false);
        for (uint256 i = 0; i < bad.length; ++i) {
            assertEq(verifier.outputBytes(bad[i]), sizes[i]);
            _expectDescriptor(reasons[i]);
            verifier.validateDescriptor(bad[i]);
            s.descriptor = bad[i];
            _expectDescriptor(reasons[i]);
            _verify(s);
        }
    }

    function test_RevertWhen_VerifyGetsABadDescriptor() public {
        Step memory s = _linear(false);
        s.descriptor[0] = bytes1(uint8(LD.OP_LAST + 1));
        _expectDescriptor(LD.R_OPCODE);
        _verify(s);
    }

    // ================================================================ per-channel parameters

    /// @dev requant int32[1] -> int8[1] per-channel; unit input x = [1000], qp weight = [[mult, shift]].
    function _perChannelStep(int32 mult, int32 shift) internal view returns (Step memory s) {
        s.descriptor = abi.encodePacked(
            uint8(2), uint8(2), _slot(1, 0, _tt(2, 1, 1, 1, 1, 1)), _slot(0, 0, _tt(2, 2, 1, 2, 1, 1)),
            _tt(1, 1, 1, 1, 1, 1), uint8(2), int32(0), uint8(0), int8(0), int8(-128), int8(127)
        );
        bytes memory x = new bytes(Constants.LEAF_BYTES);
        x[0] = 0xe8; // 1000 = 0x03e8, little-endian
        x[1] = 0x03;
        bytes memory qp = new bytes(Constants.LEAF_BYTES);
        for (uint256 b = 0; b < 4; ++b) {
            qp[b] = bytes1(uint8(uint32(mult) >> (8 * b)));
            qp[4 + b] = bytes1(uint8(uint32(shift) >> (8 * b)));
        }
        bytes32[] memory roots = new bytes32[](2);
        roots[0] = LibMerkle.leafHash(x);
        roots[1] = LibMerkle.leafHash(qp);
        bytes32[][] memory paths;
        (s.ctx, paths) = _context(roots, false);
        s.proofs = bytes.concat(roots[0], abi.encodePacked(paths[0]), x, roots[1], abi.encodePacked(paths[1]), qp);
        s.outDtype = 1;
        // 1000 * mult / 2^shift rounded half up, clamped: with (3, 4): 187.5 -> 188 -> 127
        s.value = 127;
        s.leaf = _leafWith(0, 1, s.value);
    }

    function test_PerChannel_HandMadeRowVerifies() public view {
        assertTrue(_verify(_perChannelStep(3, 4)));
        Step memory s = _perChannelStep(1, 4); // 1000/16 = 62.5 -> 63 (half up)
        _put(s.leaf, 0, 1, 63);
        assertTrue(_verify(s));
        _put(s.leaf, 0, 1, 62);
        assertFalse(_verify(s));
    }

    function test_RevertWhen_PerChannelRowOutOfRange() public {
        int32[3] memory mults = [int32(-1), int32(1), int32(1)];
        int32[3] memory shifts = [int32(4), int32(0), int32(63)];
        for (uint256 i = 0; i < 3; ++i) {
            Step memory s = _perChannelStep(mults[i], shifts[i]);
            vm.expectRevert(
                abi.encodeWithSelector(Int8Errors.Int8Verifier_BadChannelParams.selector, mults[i], shifts[i])
            );
            _verify(s);
        }
    }
}
