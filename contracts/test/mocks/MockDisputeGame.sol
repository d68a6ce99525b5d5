// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";

/// @title MockDisputeGame
/// @notice Test stand-in for the dispute game: it only forwards the market hooks, so market and
///         registry tests can open and resolve games with any outcome. Never deployed by scripts.
contract MockDisputeGame {
    IJobMarket public market;

    /// @dev Set after construction: the market is deployed with this contract's address.
    function setMarket(IJobMarket market_) external {
        market = market_;
    }

    /// @notice Game ids count up from 1 in opening order, as in DisputeGame.
    uint256 public gameCount;

    function open(uint256 jobId) external returns (uint256 gameId) {
        gameId = ++gameCount;
        market.onChallengeOpened(jobId);
    }

    function resolve(uint256 jobId, uint256 gameId, address challenger, bool workerLost) external {
        market.onChallengeResolved(jobId, gameId, challenger, workerLost);
    }
}
