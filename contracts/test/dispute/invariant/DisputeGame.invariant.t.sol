// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, console} from "forge-std/Test.sol";
import {IDisputeGame} from "../../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../../src/dispute/DisputeGame.sol";
import {IJobMarket} from "../../../src/interfaces/IJobMarket.sol";
import {MockMarket} from "../mocks/MockMarket.sol";
import {ToyStepper} from "../mocks/ToyStepper.sol";
import {DisputeHandler} from "./DisputeHandler.sol";

/// @notice The dispute-game properties of contracts/test/invariant/README.md ("Dispute game").
contract DisputeGameInvariantTest is Test {
    DisputeGame internal game;
    MockMarket internal market;
    DisputeHandler internal handler;
    uint64 internal constant CLOCK = 1 days;

    function setUp() public {
        market = new MockMarket();
        game = new DisputeGame(IJobMarket(address(market)), new ToyStepper(), 1, CLOCK);
        market.setGame(address(game));
        handler = new DisputeHandler(game, market);
        targetContract(address(handler));
    }

    /// @notice D1: an honest player wins every game it plays, also on a job another game already
    ///         slashed (games play to their end; the market pays the earliest one lost).
    function invariant_HonestSideWinsEveryGame() public view {
        assertFalse(handler.ghostHonestMoveFailed(), "an honest move reverted");
        for (uint256 i = 0; i < handler.gameCount(); ++i) {
            uint256 id = handler.gameIds(i);
            IDisputeGame.Game memory g = game.getGame(id);
            if (g.phase != IDisputeGame.Phase.Resolved) continue;
            if (handler.honestSide(id) == IDisputeGame.Side.Worker) {
                assertEq(uint8(g.outcome), uint8(IDisputeGame.Outcome.WorkerWon), "honest worker lost");
            } else {
                assertEq(uint8(g.outcome), uint8(IDisputeGame.Outcome.ChallengerWon), "honest challenger lost");
            }
        }
    }

    /// @notice D2: the game is solvent: its balance is the open bonds + credits + burned, and
    ///         equals everything paid in minus everything withdrawn.
    function invariant_BondsSolvent() public view {
        uint256 open;
        for (uint256 i = 0; i < handler.gameCount(); ++i) {
            IDisputeGame.Game memory g = game.getGame(handler.gameIds(i));
            if (g.phase != IDisputeGame.Phase.Resolved) open += g.bond;
        }
        uint256 credits = game.credits(handler.worker());
        address[3] memory cs = handler.challengers();
        for (uint256 i = 0; i < 3; ++i) {
            credits += game.credits(cs[i]);
        }
        assertEq(address(game).balance, open + credits + game.burned(), "balance != obligations");
        assertEq(address(game).balance, handler.ghostBondsIn() - handler.ghostWithdrawn(), "balance != flows");
    }

    /// @notice D3: no slash without a lost game; one slash per job; open-game counts agree.
    function invariant_NoSlashWithoutLostGame() public view {
        uint256 slashedJobs;
        for (uint256 j = 0; j < handler.jobCount(); ++j) {
            uint256 jobId = handler.jobIds(j);
            bool lost;
            uint32 open;
            for (uint256 i = 0; i < handler.gameCount(); ++i) {
                IDisputeGame.Game memory g = game.getGame(handler.gameIds(i));
                if (g.jobId != jobId) continue;
                if (g.outcome == IDisputeGame.Outcome.ChallengerWon) lost = true;
                if (g.phase != IDisputeGame.Phase.Resolved) ++open;
            }
            assertEq(market.isSlashed(jobId), lost, "slash <=> a lost game");
            assertEq(market.openDisputes(jobId), open, "open games");
            if (lost) ++slashedJobs;
        }
        assertEq(market.slashCount(), slashedJobs);
    }

    /// @notice D4: clocks never exceed their budget; resolved games stay resolved (moveNo frozen).
    function invariant_ClocksWithinBudget() public view {
        for (uint256 i = 0; i < handler.gameCount(); ++i) {
            IDisputeGame.Game memory g = game.getGame(handler.gameIds(i));
            assertLe(g.workerClock, CLOCK);
            assertLe(g.challengerClock, CLOCK);
        }
    }

    /// @dev Coverage: how many games each run played to the end (printed with -vv).
    function afterInvariant() external view {
        console.log(
            "games opened/resolved/past-op-proof:",
            handler.gameCount(),
            handler.ghostGamesResolved(),
            handler.ghostOneStepEnds()
        );
    }
}
