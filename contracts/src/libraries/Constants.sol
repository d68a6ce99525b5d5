// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Constants
/// @notice Protocol constants of docs/protocol.md section 1. Each one has a Python twin in
///         gpumesh.client.core.constants; tests/vectors/merkle_*.json pins both to the same values.
/// @dev Import from any contract or library; holds no state (one pure rounding helper).
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

    // ------------------------------------------------------------ economics (docs/protocol.md 4.11)
    /// @notice Basis-point denominator.
    uint256 internal constant BPS = 10_000;
    /// @notice Protocol floor of a job's executionTime (seconds): no spec can ask a worker for a
    ///         result sooner, whatever the worker's own acceptance policy does.
    uint32 internal constant MIN_EXECUTION_TIME = 300;
    /// @notice Floor of a job's disputeBond relative to its requiredStake (basis points), on top of
    ///         the deployment's absolute floor (JobMarket.minDisputeBond): a game, or a data
    ///         request, always costs its opener a share of what it freezes.
    uint256 internal constant MIN_BOND_BPS = 500;
    /// @notice Share of a slashed worker's locked stake credited to the winning challenger; the
    ///         rest (at least half, rounding toward the burn) is burned. A cheater that loses to its
    ///         own puppet therefore still loses at least half its stake.
    uint256 internal constant SLASH_CHALLENGER_BPS = 5_000;
    /// @notice Part of the locked stake burned when a claimed job misses its execution deadline
    ///         (rounded up, never zero). None of it goes to the poster, who only gets its reward
    ///         back: expiring jobs is never a business.
    uint256 internal constant EXPIRY_SLASH_BPS = 1_000;
    /// @notice Part of a data request's bond paid to the worker that answers it (its calldata gas);
    ///         the rest goes back to the requester.
    uint256 internal constant DATA_FEE_BPS = 5_000;
    /// @notice Largest unit output (bytes) a data request's answer carries: 64 leaves, about 1.6M
    ///         gas of calldata, log and hashing, so an answer always fits in one transaction. The
    ///         program validator refuses programs whose unit output is larger.
    uint256 internal constant MAX_UNIT_OUTPUT_BYTES = 65_536;

    /// @notice ceil(amount * bps / BPS): a share that never rounds to zero for a non-zero amount.
    function bpsUp(uint256 amount, uint256 bps) internal pure returns (uint256) {
        return (amount * bps + BPS - 1) / BPS;
    }
}
