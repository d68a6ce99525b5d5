// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IJobMarket} from "../../../src/interfaces/IJobMarket.sol";

/// @title MockMarket
/// @notice The four dispute hooks of IJobMarket with the same rules as JobMarket (game-only
///         callers, Submitted + open window to open a game, slash once, paid to the earliest game lost), and setters for tests.
///         It records slashes so invariants can check "no slash without a lost game".
contract MockMarket {
    error MockMarket_NotGame(address caller);
    error MockMarket_WindowClosed(uint256 jobId);
    error MockMarket_NoOpenDispute(uint256 jobId);

    uint8 internal constant SUBMITTED = 3;
    uint8 internal constant SLASHED = 7;

    address public game;
    mapping(uint256 => IJobMarket.DisputeContext) internal _ctx;
    mapping(uint256 => uint32) public openDisputes;
    /// @notice Challenger of the earliest-opened game the worker lost (the one JobMarket pays).
    mapping(uint256 => address) public slashedBy;
    mapping(uint256 => uint256) public firstWonGame;
    uint256 public slashCount;

    function setGame(address g) external {
        game = g;
    }

    function setJob(uint256 jobId, IJobMarket.DisputeContext calldata ctx) external {
        _ctx[jobId] = ctx;
    }

    function disputeContext(uint256 jobId) external view returns (IJobMarket.DisputeContext memory) {
        return _ctx[jobId];
    }

    function onChallengeOpened(uint256 jobId) external {
        if (msg.sender != game) revert MockMarket_NotGame(msg.sender);
        IJobMarket.DisputeContext storage c = _ctx[jobId];
        if (c.state != SUBMITTED || block.timestamp >= c.challengeDeadline) revert MockMarket_WindowClosed(jobId);
        openDisputes[jobId] += 1;
    }

    function onChallengeResolved(uint256 jobId, uint256 gameId, address challenger, bool workerLost) external {
        if (msg.sender != game) revert MockMarket_NotGame(msg.sender);
        if (openDisputes[jobId] == 0) revert MockMarket_NoOpenDispute(jobId);
        openDisputes[jobId] -= 1;
        if (workerLost) {
            if (_ctx[jobId].state != SLASHED) {
                _ctx[jobId].state = SLASHED;
                slashCount += 1;
            }
            // Same rule as JobMarket: the earliest-opened game the worker lost is the one paid.
            if (firstWonGame[jobId] == 0 || gameId < firstWonGame[jobId]) {
                firstWonGame[jobId] = gameId;
                slashedBy[jobId] = challenger;
            }
        }
    }

    function isSlashed(uint256 jobId) external view returns (bool) {
        return _ctx[jobId].state == SLASHED;
    }
}
