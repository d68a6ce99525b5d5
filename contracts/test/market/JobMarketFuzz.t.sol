// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MarketBase} from "./MarketBase.t.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";
import {JobSpec, JobState} from "../../src/types/JobTypes.sol";

/// @notice Fuzz tests: arithmetic of slashes and deadlines, stake bounds. Expected values come from
///         the published constants (EXPIRY_SLASH_BPS = 10% rounded up, all burned;
///         SLASH_CHALLENGER_BPS = 50% rounded down), written out here.
contract JobMarketFuzzTest is MarketBase {
    function _postWith(uint96 reward, uint96 stake_, uint32 exec, uint32 window) internal returns (uint256 id) {
        JobSpec memory s = _spec();
        s.requiredStake = stake_;
        s.executionTime = exec;
        s.challengeWindow = window;
        uint256 minBond = (uint256(stake_) * 500 + 9999) / 10_000; // MIN_BOND_BPS, rounded up
        s.disputeBond = uint96(minBond > MIN_BOND ? minBond : MIN_BOND);
        vm.deal(poster, reward);
        vm.prank(poster);
        id = market.postJob{value: reward}(s);
    }

    function testFuzz_ExpiryBurnsATenthOfStakeRoundedUp(uint96 stake_, uint96 extra) public {
        stake_ = uint96(bound(stake_, 1, type(uint96).max / 2));
        extra = uint96(bound(extra, 0, type(uint96).max / 2));
        vm.deal(worker, uint256(stake_) + extra);
        _stake(worker, uint256(stake_) + extra);
        uint256 id = _postWith(REWARD, stake_, EXEC, WINDOW);
        vm.prank(worker);
        market.claimJob(id);
        vm.warp(block.timestamp + EXEC + 1);
        market.expireJob(id);
        uint256 slashed = (uint256(stake_) + 9) / 10;
        assertGt(slashed, 0, "never rounds to zero");
        assertEq(registry.totalBurned(), slashed);
        assertEq(registry.credits(poster), 0);
        IWorkerRegistry.StakeInfo memory si = registry.stakeOf(worker);
        assertEq(si.total, uint256(stake_) + extra - slashed);
        assertEq(si.locked, 0);
        assertEq(registry.freeStake(worker), uint256(stake_) + extra - slashed);
        assertEq(address(registry).balance, uint256(si.total) + registry.credits(poster) + registry.totalBurned());
    }

    function testFuzz_LostGameSlashesWholeLockedStake(uint96 stake_, uint96 extra) public {
        stake_ = uint96(bound(stake_, 1, type(uint96).max / 2));
        extra = uint96(bound(extra, 0, type(uint96).max / 2));
        vm.deal(worker, uint256(stake_) + extra);
        _stake(worker, uint256(stake_) + extra);
        uint256 id = _postWith(REWARD, stake_, EXEC, WINDOW);
        vm.startPrank(worker);
        market.claimJob(id);
        market.submitResult(id, keccak256("r"), "out");
        vm.stopPrank();
        uint256 g = game.open(id);
        game.resolve(id, g, challenger, true);
        uint256 burned = uint256(stake_) - uint256(stake_) / 2;
        assertGe(burned * 2, uint256(stake_), "at least half burned");
        assertEq(registry.credits(challenger), uint256(stake_) - burned);
        assertEq(registry.totalBurned(), burned);
        assertEq(registry.stakeOf(worker).total, extra, "free stake untouched");
        assertEq(market.credits(poster), REWARD);
    }

    function testFuzz_SubmitAllowedExactlyUntilExecutionDeadline(uint32 exec, uint32 dt) public {
        exec = uint32(bound(exec, 300, 365 days)); // MIN_EXECUTION_TIME
        dt = uint32(bound(dt, 0, 400 days));
        _stake(worker, STAKE);
        uint256 id = _postWith(REWARD, STAKE, exec, WINDOW);
        vm.prank(worker);
        market.claimJob(id);
        uint256 claimedAt = block.timestamp;
        vm.warp(claimedAt + dt);
        if (dt > exec) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IJobMarket.JobMarket_ExecutionDeadlinePassed.selector, id, claimedAt + exec, claimedAt + dt
                )
            );
        }
        vm.prank(worker);
        market.submitResult(id, keccak256("r"), "out");
        // Whatever happened, the job can be moved on by anyone later: no stuck escrow.
        vm.warp(block.timestamp + 366 days);
        if (dt > exec) market.expireJob(id);
        else market.finalizeJob(id);
        assertEq(market.credits(dt > exec ? poster : worker), REWARD);
    }

    function testFuzz_ChallengeOnlyInsideWindow(uint32 window, uint32 dt) public {
        window = uint32(bound(window, 1, 365 days));
        dt = uint32(bound(dt, 0, 400 days));
        _stake(worker, STAKE);
        uint256 id = _postWith(REWARD, STAKE, EXEC, window);
        vm.startPrank(worker);
        market.claimJob(id);
        market.submitResult(id, keccak256("r"), "out");
        vm.stopPrank();
        uint256 submittedAt = block.timestamp;
        vm.warp(submittedAt + dt);
        if (dt >= window) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IJobMarket.JobMarket_ChallengeWindowClosed.selector, id, submittedAt + window, submittedAt + dt
                )
            );
            game.open(id);
            market.finalizeJob(id); // the window is closed, so finalization is open
        } else {
            game.open(id);
            vm.expectRevert(
                abi.encodeWithSelector(
                    IJobMarket.JobMarket_ChallengeWindowOpen.selector, id, submittedAt + window, submittedAt + dt
                )
            );
            market.finalizeJob(id);
        }
    }

    function testFuzz_FreePlusLockedEqualsTotal(uint96 staked, uint96 unstake, uint8 jobs) public {
        staked = uint96(bound(staked, 1, 1000 ether));
        jobs = uint8(bound(jobs, 0, 5));
        _stake(worker, staked);
        uint256 lockedSum;
        for (uint256 i = 0; i < jobs; i++) {
            uint96 need = uint96(bound(uint256(keccak256(abi.encode(i, staked))), 1, 100 ether));
            uint256 id = _postWith(REWARD, need, EXEC, WINDOW);
            bool fits = need <= registry.freeStake(worker);
            if (!fits) vm.expectRevert();
            vm.prank(worker);
            market.claimJob(id);
            if (fits) {
                lockedSum += need;
            }
        }
        IWorkerRegistry.StakeInfo memory si = registry.stakeOf(worker);
        assertEq(si.locked, lockedSum);
        assertEq(registry.freeStake(worker) + si.locked, si.total);
        unstake = uint96(bound(unstake, 1, type(uint96).max));
        if (unstake > si.total - si.locked) vm.expectRevert();
        vm.prank(worker);
        registry.requestUnstake(unstake);
    }

    function testFuzz_PostJobRejectsOutOfRangeClaimDeadline(uint64 claimDeadline) public {
        JobSpec memory s = _spec();
        s.claimDeadline = claimDeadline;
        bool ok = claimDeadline >= block.timestamp && claimDeadline <= block.timestamp + 365 days;
        if (!ok) vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidSpec.selector, "claimDeadline"));
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
        if (ok) assertEq(uint8(_state(1)), uint8(JobState.Open));
    }
}
