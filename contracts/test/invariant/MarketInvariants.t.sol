// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, console2} from "forge-std/Test.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";
import {Job, JobState} from "../../src/types/JobTypes.sol";
import {MockDisputeGame} from "../mocks/MockDisputeGame.sol";
import {MarketHandler} from "./MarketHandler.sol";

/// @notice The market/registry properties of contracts/test/invariant/README.md (M1..M8).
contract MarketInvariants is Test {
    JobMarket internal market;
    WorkerRegistry internal registry;
    MockDisputeGame internal game;
    MarketHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        game = new MockDisputeGame();
        address predictedMarket = vm.computeCreateAddress(address(this), vm.getNonce(address(this)) + 1);
        registry = new WorkerRegistry(predictedMarket, 1 days);
        market = new JobMarket(IWorkerRegistry(address(registry)), address(game), 0.01 ether);
        game.setMarket(market);
        handler = new MarketHandler(market, registry, game);
        targetContract(address(handler));
    }

    function _isLive(JobState s) internal pure returns (bool) {
        return s == JobState.Open || s == JobState.Claimed || s == JobState.Submitted;
    }

    function _sums() internal view returns (uint256 escrow, uint256 marketCredits, uint256 stakes, uint256 regCredits) {
        for (uint256 i = 0; i < handler.jobCount(); i++) {
            Job memory j = market.getJob(handler.jobIds(i));
            if (_isLive(j.state)) escrow += j.reward;
        }
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            address a = handler.actors(i);
            marketCredits += market.credits(a);
            IWorkerRegistry.StakeInfo memory s = registry.stakeOf(a);
            stakes += uint256(s.total) + s.unbonding;
            regCredits += registry.credits(a);
        }
    }

    /// M1
    function invariant_MarketEscrowConserved() public view {
        (uint256 escrow, uint256 credits,,) = _sums();
        assertEq(address(market).balance, escrow + credits);
    }

    /// M2
    function invariant_RegistryBalanceConserved() public view {
        (,, uint256 stakes, uint256 credits) = _sums();
        assertEq(address(registry).balance, stakes + credits + registry.totalBurned());
    }

    /// M3
    function invariant_NoValueCreatedOrLost() public view {
        assertEq(handler.ghostIn(), handler.ghostOut() + address(market).balance + address(registry).balance);
    }

    /// M4
    function invariant_StakeAccounting() public view {
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            address a = handler.actors(i);
            IWorkerRegistry.StakeInfo memory s = registry.stakeOf(a);
            assertLe(s.locked, s.total);
            assertEq(registry.freeStake(a), s.total - s.locked);
            uint256 expectedLocked;
            for (uint256 k = 0; k < handler.jobCount(); k++) {
                Job memory j = market.getJob(handler.jobIds(k));
                // A Slashed job keeps its stake locked until its last game ends (4.11).
                bool slashPending = j.state == JobState.Slashed && j.openDisputes > 0;
                if (j.worker == a && (j.state == JobState.Claimed || j.state == JobState.Submitted || slashPending)) {
                    expectedLocked += j.requiredStake;
                }
            }
            assertEq(s.locked, expectedLocked, "locked == stake of live claimed jobs and pending slashes");
        }
    }

    /// M5: on a snapshot, move everything on and pay everyone out; then restore.
    function invariant_NoFundsStuck() public {
        uint256 snap = vm.snapshotState();
        vm.warp(block.timestamp + 365 days);
        uint256 n = handler.jobCount();
        for (uint256 i = 0; i < n; i++) {
            uint256 id = handler.jobIds(i);
            uint256[] memory open = handler.openGameIds(id);
            for (uint256 g = 0; g < open.length; g++) game.resolve(id, open[g], address(this), false);
            JobState s = market.getJob(id).state;
            if (s == JobState.Open || s == JobState.Claimed) market.expireJob(id);
            else if (s == JobState.Submitted) market.finalizeJob(id);
            assertFalse(_isLive(market.getJob(id).state), "job still live");
        }
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            address a = handler.actors(i);
            if (market.credits(a) > 0) {
                vm.prank(a);
                market.withdraw();
            }
            uint256 free = registry.freeStake(a);
            if (free > 0) {
                vm.prank(a);
                registry.requestUnstake(uint96(free));
            }
        }
        vm.warp(block.timestamp + 2 days);
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            address a = handler.actors(i);
            IWorkerRegistry.StakeInfo memory s = registry.stakeOf(a);
            if (s.unbonding > 0 || registry.credits(a) > 0) {
                vm.prank(a);
                registry.withdraw();
            }
        }
        assertEq(address(market).balance, 0, "market holds nothing after everyone withdrew");
        assertEq(address(registry).balance, registry.totalBurned(), "registry holds only burned stake");
        vm.revertToState(snap);
    }

    /// M6
    function invariant_SlashOnlyByExpiryOrGame() public view {
        assertFalse(handler.ghostUnauthorizedSlash(), "slash by a non-market caller succeeded");
        assertEq(registry.totalBurned(), handler.ghostBurned(), "burned == ghost slashes");
        (,,, uint256 regCredits) = _sums();
        assertEq(regCredits + handler.ghostRegistryCreditsWithdrawn(), handler.ghostSlashCredits());
        uint256 slashedJobs;
        for (uint256 i = 0; i < handler.jobCount(); i++) {
            if (market.isSlashed(handler.jobIds(i))) slashedJobs++;
        }
        assertEq(slashedJobs, handler.ghostFirstLosses());
    }

    /// M9: a settled slash pays the challenger of the EARLIEST-opened game the worker lost, whatever
    ///     order the games ended in (a cheater cannot hand it to a puppet that lost a later game faster).
    function invariant_SlashPaysEarliestLostGame() public view {
        assertFalse(handler.ghostWrongWinnerPaid(), "slash paid to another than the earliest lost game");
    }

    /// M10: every slash of a lost game burns at least half the locked stake; an expiry pays the poster
    ///      nothing beyond its reward (M6's ghost credits count only game slashes).
    function invariant_CheaterLosesAtLeastHalf() public view {
        assertFalse(handler.ghostBurnBelowHalf(), "a game slash burned less than half the stake");
    }

    /// M7
    function invariant_TerminalStatesStay() public view {
        assertFalse(handler.ghostTerminalChanged());
    }

    /// M11: a claimed job past its execution deadline re-opens while the poster's claim deadline
    /// is ahead and ends Expired after it.
    function invariant_ExpiryReopensOnlyInsideClaimWindow() public view {
        assertFalse(handler.ghostWrongExpiry());
    }

    /// M8
    function invariant_OpenDisputesMatchGhost() public view {
        for (uint256 i = 0; i < handler.jobCount(); i++) {
            uint256 id = handler.jobIds(i);
            Job memory j = market.getJob(id);
            assertEq(j.openDisputes, handler.ghostOpenGames(id));
            if (j.state != JobState.Submitted && j.state != JobState.Slashed) assertEq(j.openDisputes, 0);
        }
    }

    /// Sums what the runs reached (printed with -vv; not a property).
    function afterInvariant() public view {
        string[9] memory names = ["claim", "submit", "finalize", "cancel", "expire", "open", "slash", "reopen", "postJobs"];
        for (uint256 i = 0; i < names.length; i++) {
            console2.log(names[i], handler.ghostDone(names[i]));
        }
    }
}
