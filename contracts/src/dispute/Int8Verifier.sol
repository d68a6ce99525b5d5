// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "./IOneStepVerifier.sol";
import {Int8Errors} from "./int8/Int8Errors.sol";
import {LibDescriptor as LD} from "./int8/LibDescriptor.sol";
import {LibInt8Ops} from "./int8/LibInt8Ops.sol";
import {LibMerkle} from "../libraries/LibMerkle.sol";
import {Constants} from "../libraries/Constants.sol";

/// @title Int8Verifier
/// @notice The one-step referee of the int8 op set (docs/protocol.md section 5.7): decodes the disputed
///         op's descriptor (docs/protocol.md section 3), derives the input byte ranges the element reads
///         (docs/protocol.md section 2, as gpumesh.client.core.ops.reference), checks each against the
///         agreed commitments with a LibMerkle range proof, recomputes the element with the
///         runtime's exact integer semantics and compares it with the worker's revealed value.
/// @dev Stateless, no constructor arguments. `proofs` layout (docs/protocol.md 5.7.3; Python
///      encoder gpumesh.node.dispute.int8_prover): for each input the element reads, in input
///      order: slotRoot (32) || rootPath (32 each) || per range of that input: leaves (LEAF_BYTES
///      each) || range siblings (32 each). Every length follows from the descriptor and the
///      context, so the blob carries no length fields and must be consumed exactly.
contract Int8Verifier is IOneStepVerifier, Int8Errors {
    /// @inheritdoc IOneStepVerifier
    /// @dev Light decoding (LibDescriptor.declaredOutputBytes): length, opcode and the declared
    ///      output type only; the full validation runs once, in `verify`. Safe because the game
    ///      proved the descriptor against the ops root first, and a descriptor that fails the full
    ///      validation makes every `verify` of its op revert, so the challenger can never win at
    ///      that op: exactly the outcome it had when proveOp itself reverted (docs/protocol.md 5.7.2).
    ///      On every descriptor that passes it, the value equals `validateDescriptor`'s.
    function outputBytes(bytes calldata descriptor) external pure returns (uint256) {
        return LD.declaredOutputBytes(descriptor);
    }

    /// @notice Decode and fully validate `descriptor` exactly as `verify` does first (the twin of
    ///         the Python OpDescriptor.decode + check_descriptor); its output's byte length.
    /// @dev Reverts Int8Verifier_BadDescriptor(reason) on any rule the Python validator enforces.
    ///      Off-chain pre-check and test entry point; the game does not call it.
    function validateDescriptor(bytes calldata descriptor) external pure returns (uint256) {
        return LD.nbytes(LD.decode(descriptor).out);
    }

    /// @inheritdoc IOneStepVerifier
    function verify(
        OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external pure returns (bool workerCorrect) {
        LD.Desc memory D = LD.decode(descriptor);
        uint256 width = LD.width(D.out);
        _checkElement(ctx, elementIndex, width, LD.count(D.out));
        if (leaf.length != Constants.LEAF_BYTES) revert Int8Verifier_BadLeaf(leaf.length);
        LibInt8Ops.Range[] memory r = LibInt8Ops.ranges(D, elementIndex);
        _open(ctx, D, r, proofs);
        int256 worker = _workerValue(leaf, (elementIndex * width) % Constants.LEAF_BYTES, width);
        return worker == LibInt8Ops.compute(D, elementIndex, r);
    }

    /// @dev SAFETY: an element outside the tensor (canonical padding is the game's business,
    ///      checked at revealLeaf) or outside the revealed leaf is the challenger's error, not
    ///      evidence against the worker. int32 elements never straddle leaves (LEAF_BYTES % 4 == 0).
    function _checkElement(OneStepContext calldata ctx, uint256 elementIndex, uint256 width, uint256 outCount)
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
    ///      commitments; sets each range's memory pointer. Reverts on any mismatch.
    function _open(OneStepContext calldata ctx, LD.Desc memory D, LibInt8Ops.Range[] memory r, bytes calldata proofs)
        private
        pure
    {
        uint256 cur = 0;
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
        if (cur != proofs.length) revert Int8Verifier_BadProofsLength(proofs.length, cur);
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
        OneStepContext calldata ctx,
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
