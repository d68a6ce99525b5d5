// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "../IOneStepVerifier.sol";
import {Int8Errors} from "./Int8Errors.sol";
import {LibDescriptor as LD} from "./LibDescriptor.sol";
import {LibInt8Ops} from "./LibInt8Ops.sol";
import {LibMerkle} from "../../libraries/LibMerkle.sol";
import {Constants} from "../../libraries/Constants.sol";

/// @title Int8StepBase
/// @notice What every int8 one-step verifier shares (docs/protocol.md 5.7.2-5.7.3): the element and
///         leaf checks, the worker's value, and the opening of the `proofs` blob (slot roots chained
///         to the agreed commitments, range proofs). Inherited by Int8Verifier (opcodes 0x01-0x0E, 0x17-0x18)
///         and Int8TransformerVerifier (0x0F-0x16), which differ only in the op rules they apply.
abstract contract Int8StepBase is Int8Errors {
    /// @dev The worker's value of `elementIndex` after the element and leaf checks of 5.7.2.
    function _workerElement(
        IOneStepVerifier.OneStepContext calldata ctx,
        LD.Desc memory D,
        uint256 elementIndex,
        bytes calldata leaf
    ) internal pure returns (int256) {
        uint256 width = LD.width(D.out);
        _checkElement(ctx, elementIndex, width, LD.count(D.out));
        if (leaf.length != Constants.LEAF_BYTES) revert Int8Verifier_BadLeaf(leaf.length);
        return _workerValue(leaf, (elementIndex * width) % Constants.LEAF_BYTES, width);
    }

    /// @dev The blob must be consumed exactly.
    function _end(bytes calldata proofs, uint256 cur) internal pure {
        if (cur != proofs.length) revert Int8Verifier_BadProofsLength(proofs.length, cur);
    }

    /// @dev SAFETY: an element outside the tensor (canonical padding is the game's business,
    ///      checked at revealLeaf) or outside the revealed leaf is the challenger's error, not
    ///      evidence against the worker. int32 elements never straddle leaves (LEAF_BYTES % 4 == 0).
    function _checkElement(IOneStepVerifier.OneStepContext calldata ctx, uint256 elementIndex, uint256 width, uint256 outCount)
        private
        pure
    {
        if (elementIndex >= outCount || (elementIndex * width) / Constants.LEAF_BYTES != ctx.leafIndex) {
            revert Int8Verifier_BadElement(elementIndex, outCount, ctx.leafIndex);
        }
    }

    /// @dev Signed little-endian element of `width` bytes at `off` of the worker's leaf.
    function _workerValue(bytes calldata leaf, uint256 off, uint256 width) private pure returns (int256) {
        if (width == 1) return int8(uint8(leaf[off]));
        uint256 v = uint8(leaf[off]) | uint256(uint8(leaf[off + 1])) << 8 | uint256(uint8(leaf[off + 2])) << 16
            | uint256(uint8(leaf[off + 3])) << 24;
        return int32(uint32(v));
    }

    // ================================================================ proofs

    /// @dev Checks every range against its slot root and every slot root against the agreed
    ///      commitments, reading `proofs` from `cur`; sets each range's memory pointer and returns
    ///      the cursor after them. Reverts on any mismatch.
    function _open(
        IOneStepVerifier.OneStepContext calldata ctx,
        LD.Desc memory D,
        LibInt8Ops.Range[] memory r,
        bytes calldata proofs,
        uint256 cur
    ) internal pure returns (uint256) {
        uint256 input = type(uint256).max;
        bytes32 slotRoot = bytes32(0);
        uint256 depth = 0;
        for (uint256 q = 0; q < r.length; ++q) {
            if (r[q].input != input) {
                // INVARIANT: ranges come in ascending input order (reference.element_ranges), so
                // each input's root is proven once, before its ranges.
                input = r[q].input;
                LD.Slot memory s = D.ins[input];
                _need(proofs, cur + 32);
                slotRoot = bytes32(proofs[cur:cur + 32]);
                cur = _checkSlotRoot(ctx, s, input, slotRoot, proofs, cur + 32);
                depth = LibMerkle.tensorDepth(LD.nbytes(s.t));
            }
            cur = _checkRange(r[q], slotRoot, depth, proofs, cur);
        }
        return cur;
    }

    function _need(bytes calldata proofs, uint256 end) private pure {
        if (end > proofs.length) revert Int8Verifier_BadProofsLength(proofs.length, end);
    }

    /// @dev The slot root at proofs[cur-32:cur] is agreed. WEIGHT w: leaf w of the weights tree
    ///      (depth from numWeights), whose root is the LEFT child of inputsRoot (one more sibling:
    ///      unitInputsRoot). UNIT_INPUT: leaf unitIndex of the unit-inputs tree (depth from
    ///      numUnits), the RIGHT child of inputsRoot (last sibling: weightsRoot). OP_OUTPUT j:
    ///      leaf j of the worker's trace root, only for j < opIndex (the agreed prefix).
    function _checkSlotRoot(
        IOneStepVerifier.OneStepContext calldata ctx,
        LD.Slot memory s,
        uint256 input,
        bytes32 slotRoot,
        bytes calldata proofs,
        uint256 cur
    ) private pure returns (uint256) {
        uint256 index;
        uint256 len;
        bytes32 root;
        if (s.kind == LD.KIND_WEIGHT) {
            if (s.index >= ctx.numWeights) revert Int8Verifier_BadSlotRoot(input, s.kind, s.index);
            len = LibMerkle.depthFor(ctx.numWeights);
            index = s.index; // bit `len` = 0: weights root is the left child
            ++len;
            root = ctx.inputsRoot;
        } else if (s.kind == LD.KIND_UNIT_INPUT) {
            if (ctx.unitIndex >= ctx.numUnits) revert Int8Verifier_BadSlotRoot(input, s.kind, ctx.unitIndex);
            len = LibMerkle.depthFor(ctx.numUnits);
            index = ctx.unitIndex | (uint256(1) << len); // unit-inputs root is the right child
            ++len;
            root = ctx.inputsRoot;
        } else {
            // SAFETY: only trace slots before the disputed op are agreed by both players.
            if (s.index >= ctx.opIndex) revert Int8Verifier_BadSlotRoot(input, s.kind, s.index);
            len = LibMerkle.depthFor(ctx.numOps);
            index = s.index;
            root = ctx.traceRoot;
        }
        _need(proofs, cur + 32 * len);
        bytes32[] memory path = new bytes32[](len);
        for (uint256 i = 0; i < len; ++i) {
            path[i] = bytes32(proofs[cur + 32 * i:cur + 32 * i + 32]);
        }
        if (LibMerkle.rootFromPath(slotRoot, index, path) != root) {
            revert Int8Verifier_BadSlotRoot(input, s.kind, s.index);
        }
        return cur + 32 * len;
    }

    /// @dev One range: leaves [first, last) covering bytes [start, end) and the boundary siblings,
    ///      checked with LibMerkle.verifyRange against the slot root. Sets r.ptr.
    function _checkRange(LibInt8Ops.Range memory r, bytes32 slotRoot, uint256 depth, bytes calldata proofs, uint256 cur)
        private
        pure
        returns (uint256)
    {
        // slither-disable-next-line divide-before-multiply -- first leaf = floor(start / LEAF_BYTES); the product is the leaf's start
        uint256 first = r.start / Constants.LEAF_BYTES;
        uint256 last = (r.end + Constants.LEAF_BYTES - 1) / Constants.LEAF_BYTES;
        uint256 n = (last - first) * Constants.LEAF_BYTES;
        _need(proofs, cur + n);
        bytes memory leaves = proofs[cur:cur + n];
        cur += n;
        uint256 sc = siblingCount(depth, first, last - 1);
        _need(proofs, cur + 32 * sc);
        bytes32[] memory sibs = new bytes32[](sc);
        for (uint256 i = 0; i < sc; ++i) {
            sibs[i] = bytes32(proofs[cur + 32 * i:cur + 32 * i + 32]);
        }
        if (!LibMerkle.verifyRange(slotRoot, depth, first, last, leaves, sibs)) {
            revert Int8Verifier_BadRangeProof(r.input, first, last);
        }
        uint256 ptr;
        assembly ("memory-safe") {
            ptr := add(leaves, 0x20)
        }
        // slither-disable-next-line divide-before-multiply -- first leaf = floor(start / LEAF_BYTES); the product is the leaf's start
        r.ptr = ptr + (r.start - first * Constants.LEAF_BYTES);
        return cur + 32 * sc;
    }

    /// @notice Siblings of a range proof of leaves [lo, hi] in a depth-`depth` tree: per level, one
    ///         if the range starts on a right child, one if it ends on a left child.
    function siblingCount(uint256 depth, uint256 lo, uint256 hi) public pure returns (uint256 n) {
        for (uint256 h = 0; h < depth; ++h) {
            if (lo & 1 == 1) ++n;
            if (hi & 1 == 0) ++n;
            lo >>= 1;
            hi >>= 1;
        }
    }
}
