// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Constants
/// @notice Protocol constants of docs/protocol.md section 1. Each one has a Python twin in
///         gpumesh.client.core.constants; tests/vectors/merkle_*.json pins both to the same values.
/// @dev Import from any contract or library; holds no logic.
library Constants {
    /// @notice Bytes per tensor-tree leaf (a power of two).
    uint256 internal constant LEAF_BYTES = 1024;
    /// @notice log2(LEAF_BYTES).
    uint256 internal constant LEAF_BYTES_LOG2 = 10;

    /// @notice Program format / descriptor encoding version committed in the program root.
    uint32 internal constant PROGRAM_VERSION = 1;

    /// @notice Domain-separation tags: one byte prepended to the hashed data.
    bytes1 internal constant TAG_LEAF = 0x00;
    bytes1 internal constant TAG_NODE = 0x01;
    bytes1 internal constant TAG_OP = 0x02;
    bytes1 internal constant TAG_PROGRAM = 0x03;

    /// @notice Deepest tree the game accepts (2^40 leaves of a tensor = 1 PiB, or 2^40 units/ops):
    ///         bounds every loop over tree levels.
    uint256 internal constant MAX_DEPTH = 40;

    // ------------------------------------------------------------ dispute game (docs/protocol.md section 5)
    /// @notice k of the k-ary dissection: a reveal shows 2^k descendants (chosen by measurement,
    ///         docs/protocol.md 5.6).
    uint256 internal constant SPLIT_BITS = 4;
    /// @notice Chess-clock budget per side (seconds), the deployment default: 3.5 days each.
    uint64 internal constant GAME_CLOCK_SECONDS = 302_400;
    /// @notice Part of a losing challenger's bond that is burned (basis points), so a worker
    ///         that disputes itself through a puppet pays for the delay it buys.
    uint256 internal constant BOND_BURN_BPS = 5_000;
}
