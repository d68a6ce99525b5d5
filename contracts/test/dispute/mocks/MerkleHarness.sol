// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {LibMerkle} from "../../../src/libraries/LibMerkle.sol";

/// @notice Exposes LibMerkle's internal functions (several take calldata) to the forge tests.
contract MerkleHarness {
    function leafHash(bytes calldata leaf) external pure returns (bytes32) {
        return LibMerkle.leafHash(leaf);
    }

    function tensorRoot(bytes calldata data) external pure returns (bytes32) {
        return LibMerkle.tensorRoot(data);
    }

    function nodeHash(bytes32 l, bytes32 r) external pure returns (bytes32) {
        return LibMerkle.nodeHash(l, r);
    }

    function depthFor(uint256 c) external pure returns (uint256) {
        return LibMerkle.depthFor(c);
    }

    function tensorDepth(uint256 n) external pure returns (uint256) {
        return LibMerkle.tensorDepth(n);
    }

    function zeroSubtree(uint256 l) external pure returns (bytes32) {
        return LibMerkle.zeroSubtree(l);
    }

    function rootsZero(uint256 l) external pure returns (bytes32) {
        return LibMerkle.rootsZero(l);
    }

    function verifyInclusion(bytes32 root, bytes32 leaf, uint256 index, bytes32[] calldata path)
        external
        pure
        returns (bool)
    {
        return LibMerkle.verifyInclusion(root, leaf, index, path);
    }

    function verifyRange(
        bytes32 root,
        uint256 depth,
        uint256 start,
        uint256 end,
        bytes calldata leaves,
        bytes32[] calldata siblings
    ) external pure returns (bool) {
        return LibMerkle.verifyRange(root, depth, start, end, leaves, siblings);
    }

    function opLeaf(bytes calldata d) external pure returns (bytes32) {
        return LibMerkle.opLeaf(d);
    }

    function programRoot(uint32 v, uint32 n, uint32 w, bytes32 o) external pure returns (bytes32) {
        return LibMerkle.programRoot(v, n, w, o);
    }

    function inputsRoot(bytes32 w, bytes32 u) external pure returns (bytes32) {
        return LibMerkle.inputsRoot(w, u);
    }
}
