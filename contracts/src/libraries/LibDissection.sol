// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Constants} from "./Constants.sol";
import {LibMerkle} from "./LibMerkle.sol";

/// @title LibDissection
/// @notice Position math of the k-ary dissection game, mirrored 1:1 by gpumesh.client.core.game.
///         A position is (height, index): the node at `height` above the leaves whose leftmost
///         leaf is index << height. A move reveals the 2^m descendants `m` levels below the current
///         node, m = min(k, height); the challenger then picks one of them with its path.
/// @dev Pure; imported by dispute/DisputeGame.sol and its tests.
library LibDissection {
    /// @notice Which padding a tree uses: roots trees pad with bytes32(0) (result, trace, ops),
    ///         tensor trees with all-zero leaves.
    enum TreeKind {
        Roots,
        Tensor
    }

    /// @notice Levels descended by one reveal/pick round at `height` with split bits `k`.
    function stepBits(uint256 height, uint256 k) internal pure returns (uint256) {
        return height < k ? height : k;
    }

    /// @notice Root of the 2^m revealed descendants (2^m must equal children.length).
    function foldChildren(bytes32[] calldata children) internal pure returns (bytes32) {
        uint256 n = children.length;
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            level[i] = children[i];
        }
        while (n > 1) {
            n >>= 1;
            for (uint256 i = 0; i < n; ++i) {
                level[i] = LibMerkle.nodeHash(level[2 * i], level[2 * i + 1]);
            }
        }
        return level[0];
    }

    /// @notice Index of child `c` (of 2^m) of node `index`, one round (m levels) down.
    function childIndex(uint256 index, uint256 m, uint256 c) internal pure returns (uint256) {
        return (index << m) | c;
    }

    /// @notice True iff the subtree at (height, index) lies entirely beyond the first `count` leaves.
    function isPadding(uint256 height, uint256 index, uint256 count) internal pure returns (bool) {
        return (index << height) >= count;
    }

    /// @notice The canonical value of an all-padding subtree of `height` in a tree of `kind`.
    function paddingValue(TreeKind kind, uint256 height) internal pure returns (bytes32) {
        return kind == TreeKind.Roots ? LibMerkle.rootsZero(height) : LibMerkle.zeroSubtree(height);
    }

    /// @notice Seconds left on a chess clock that had `left` when its side's turn began at
    ///         `since`; 0 once run out. `expired` is true iff more than `left` seconds passed.
    function clockLeft(uint64 left, uint64 since, uint256 nowTs) internal pure returns (uint64, bool expired) {
        uint256 elapsed = nowTs - since;
        if (elapsed > left) return (0, true);
        return (uint64(left - elapsed), false);
    }

    /// @notice The tensor leaf `leafIndex` of a tensor of `nbytes` bytes carries this many data
    ///         bytes; the rest of its LEAF_BYTES are canonical zero padding.
    function dataBytesInLeaf(uint256 nbytes, uint256 leafIndex) internal pure returns (uint256) {
        uint256 offset = leafIndex * Constants.LEAF_BYTES;
        if (offset >= nbytes) return 0;
        uint256 rest = nbytes - offset;
        return rest < Constants.LEAF_BYTES ? rest : Constants.LEAF_BYTES;
    }
}
