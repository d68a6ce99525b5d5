// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../src/dispute/DisputeGame.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {MockMarket} from "./mocks/MockMarket.sol";
import {ToyModel} from "./mocks/ToyModel.sol";
import {ToyStepper} from "./mocks/ToyStepper.sol";

/// @notice Shared set-up for the dispute tests: a MockMarket, the ToyStepper, a game with split
///         bits k, a ToyModel job, and a driver that plays moves for both players.
abstract contract DisputeBase is Test {
    MockMarket internal market;
    ToyStepper internal stepper;
    DisputeGame internal game;
    ToyModel internal model;
    address internal worker = makeAddr("worker");
    address internal challenger = makeAddr("challenger");
    uint96 internal constant BOND = 1 ether;
    uint64 internal constant CLOCK = 1 days;

    function _deploy(uint256 k) internal {
        market = new MockMarket();
        stepper = new ToyStepper();
        game = new DisputeGame(IJobMarket(address(market)), stepper, k, CLOCK);
        market.setGame(address(game));
        model = new ToyModel();
    }

    function _job(uint256 jobId) internal {
        market.setJob(jobId, model.jobContext(worker, BOND, uint64(block.timestamp + 1 days)));
    }

    function _open(uint256 jobId, address who) internal returns (uint256 gameId) {
        vm.deal(who, BOND);
        vm.prank(who);
        gameId = game.challenge{value: BOND}(jobId);
    }

    function _g(uint256 gameId) internal view returns (IDisputeGame.Game memory) {
        return game.getGame(gameId);
    }

    /// @dev The next move of the side whose turn it is; `rnd` 0 = honest challenger.
    function _next(uint256 gameId, uint256 rnd) internal view returns (address who, bytes memory data) {
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.turn == IDisputeGame.Side.Worker) return (g.worker, model.workerMove(game, gameId));
        return (g.challenger, model.challengerMove(game, gameId, rnd));
    }

    function _send(address who, bytes memory data) internal returns (bool ok, bytes memory ret) {
        vm.prank(who);
        (ok, ret) = address(game).call(data);
    }

    /// @dev Play to the end; every move must land. Returns the number of moves.
    function _play(uint256 gameId, uint256 rnd) internal returns (uint256 moves) {
        while (_g(gameId).phase != IDisputeGame.Phase.Resolved) {
            (address who, bytes memory data) = _next(gameId, rnd == 0 ? 0 : uint256(keccak256(abi.encode(rnd, moves))));
            (bool ok, bytes memory ret) = _send(who, data);
            if (!ok) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
            ++moves;
            require(moves < 500, "game does not end");
        }
    }
}
