// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MarketBase} from "./MarketBase.t.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";
import {Job, JobSpec, JobState} from "../../src/types/JobTypes.sol";

/// @notice Rejects ETH, to prove a failed payout reverts instead of losing the credit.
contract EthRejecter {
    function post(IJobMarket m, JobSpec calldata s) external payable returns (uint256) {
        return m.postJob{value: msg.value}(s);
    }

    function cancel(IJobMarket m, uint256 id) external {
        m.cancelJob(id);
    }

    function withdraw(IJobMarket m) external {
        m.withdraw();
    }
}

contract JobMarketPostTest is MarketBase {
    function test_PostJob_StoresJobEscrowsRewardAndEmits() public {
        JobSpec memory s = _spec();
        vm.expectEmit(address(market));
        emit IJobMarket.JobPosted(1, poster, REWARD, s.specCid, s.minGpuMemoryMiB);
        vm.prank(poster);
        uint256 id = market.postJob{value: REWARD}(s);
        assertEq(id, 1);
        assertEq(market.jobCount(), 1);
        assertEq(address(market).balance, REWARD);
        Job memory j = market.getJob(id);
        assertEq(j.poster, poster);
        assertEq(j.reward, REWARD);
        assertEq(j.requiredStake, STAKE);
        assertEq(j.disputeBond, BOND);
        assertEq(j.deadline, s.claimDeadline);
        assertEq(j.deadline, s.claimDeadline);
        assertEq(j.executionTime, EXEC);
        assertEq(j.challengeWindow, WINDOW);
        assertEq(j.numUnits, 4);
        assertEq(j.programRoot, keccak256("program"));
        assertEq(j.inputsRoot, keccak256("inputs"));
        assertEq(j.worker, address(0));
        assertEq(j.resultRoot, bytes32(0));
        assertEq(uint8(j.state), uint8(JobState.Open));
    }

    function test_PostJob_IdsIncrease() public {
        assertEq(_post(), 1);
        assertEq(_post(), 2);
        assertEq(market.jobCount(), 2);
    }

    function test_RevertWhen_PostJobWithoutReward() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidReward.selector, 0));
        vm.prank(poster);
        market.postJob(_spec());
    }

    function test_RevertWhen_PostJobRewardAboveUint96() public {
        uint256 big = uint256(type(uint96).max) + 1;
        vm.deal(poster, big);
        JobSpec memory s = _spec();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidReward.selector, big));
        vm.prank(poster);
        market.postJob{value: big}(s);
    }

    function _expectInvalid(JobSpec memory s, string memory field) internal {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidSpec.selector, field));
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
    }

    function test_RevertWhen_PostJobSpecFieldInvalid() public {
        JobSpec memory s = _spec();
        s.specCid = "";
        _expectInvalid(s, "specCid");
        s = _spec();
        s.programRoot = bytes32(0);
        _expectInvalid(s, "programRoot");
        s = _spec();
        s.inputsRoot = bytes32(0);
        _expectInvalid(s, "inputsRoot");
        s = _spec();
        s.numUnits = 0;
        _expectInvalid(s, "numUnits");
        s = _spec();
        s.requiredStake = 0;
        _expectInvalid(s, "requiredStake");
        s = _spec();
        s.disputeBond = 0;
        _expectInvalid(s, "disputeBond");
        s = _spec();
        s.claimDeadline = uint64(block.timestamp - 1);
        _expectInvalid(s, "claimDeadline");
        s = _spec();
        s.claimDeadline = uint64(block.timestamp + 365 days + 1);
        _expectInvalid(s, "claimDeadline");
        s = _spec();
        s.executionTime = 0;
        _expectInvalid(s, "executionTime");
        s = _spec();
        s.executionTime = 365 days + 1;
        _expectInvalid(s, "executionTime");
        s = _spec();
        s.challengeWindow = 0;
        _expectInvalid(s, "challengeWindow");
        s = _spec();
        s.challengeWindow = 365 days + 1;
        _expectInvalid(s, "challengeWindow");
    }

    /// Attack 1 / attack 6 floors: an executionTime below the protocol minimum and a bond below
    /// either floor are refused; exactly at the floors they are accepted.
    function test_PostJob_FloorsOnExecutionTimeAndBond() public {
        JobSpec memory s = _spec();
        s.executionTime = 1;
        _expectInvalid(s, "executionTime");
        s.executionTime = 299;
        _expectInvalid(s, "executionTime");
        s.executionTime = 300;
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
        s = _spec();
        s.disputeBond = 1; // the one-wei bond of attack 6
        _expectInvalid(s, "disputeBond");
        s.disputeBond = BOND - 1; // 1 wei under 5% of the stake
        _expectInvalid(s, "disputeBond");
        s.requiredStake = 0.1 ether; // 5% of it is under the absolute floor
        s.disputeBond = MIN_BOND - 1;
        _expectInvalid(s, "disputeBond");
        s.disputeBond = MIN_BOND;
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
        s = _spec();
        s.requiredStake = 20 ether + 1; // 5% rounded up
        s.disputeBond = 1 ether;
        _expectInvalid(s, "disputeBond");
        s.disputeBond = 1 ether + 1;
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
    }

    function test_RevertWhen_DeployedWithZeroMinBond() public {
        vm.expectRevert(IJobMarket.JobMarket_ZeroMinBond.selector);
        new JobMarket(IWorkerRegistry(address(registry)), address(game), 0);
    }

    function test_PostJob_ClaimDeadlineNowIsAccepted() public {
        JobSpec memory s = _spec();
        s.claimDeadline = uint64(block.timestamp);
        vm.prank(poster);
        market.postJob{value: REWARD}(s);
    }
}

contract JobMarketClaimSubmitTest is MarketBase {
    function test_ClaimJob_LocksStakeSetsDeadlineAndEmits() public {
        _stake(worker, STAKE + 1);
        uint256 id = _post();
        vm.expectEmit(address(market));
        emit IJobMarket.JobClaimed(id, worker, uint64(block.timestamp + EXEC));
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.StakeLocked(worker, STAKE, STAKE);
        vm.prank(worker);
        market.claimJob(id);
        Job memory j = market.getJob(id);
        assertEq(j.worker, worker);
        assertEq(uint8(j.state), uint8(JobState.Claimed));
        assertEq(j.deadline, block.timestamp + EXEC);
        assertEq(registry.stakeOf(worker).locked, STAKE);
        assertEq(registry.freeStake(worker), 1);
    }

    function test_ClaimJob_AtClaimDeadline() public {
        _stake(worker, STAKE);
        uint256 id = _post();
        vm.warp(market.getJob(id).deadline);
        vm.prank(worker);
        market.claimJob(id);
    }

    function test_RevertWhen_ClaimUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_UnknownJob.selector, 7));
        market.claimJob(7);
    }

    function test_RevertWhen_ClaimAlreadyClaimed() public {
        uint256 id = _claimed();
        _stake(other, STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Claimed, JobState.Open)
        );
        vm.prank(other);
        market.claimJob(id);
    }

    function test_RevertWhen_ClaimAfterClaimDeadline() public {
        _stake(worker, STAKE);
        uint256 id = _post();
        uint64 d = market.getJob(id).deadline;
        vm.warp(d + 1);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_ClaimDeadlinePassed.selector, id, d, d + 1));
        vm.prank(worker);
        market.claimJob(id);
    }

    function test_RevertWhen_ClaimWithoutEnoughFreeStake() public {
        _stake(worker, STAKE - 1);
        uint256 id = _post();
        vm.expectRevert(
            abi.encodeWithSelector(
                IWorkerRegistry.WorkerRegistry_InsufficientFreeStake.selector, worker, STAKE - 1, STAKE
            )
        );
        vm.prank(worker);
        market.claimJob(id);
    }

    function test_SubmitResult_StoresRootAndOpensWindow() public {
        uint256 id = _claimed();
        vm.warp(block.timestamp + 10);
        vm.expectEmit(address(market));
        emit IJobMarket.ResultSubmitted(id, worker, keccak256("r"), "bafyout", uint64(block.timestamp + WINDOW));
        vm.prank(worker);
        market.submitResult(id, keccak256("r"), "bafyout");
        Job memory j = market.getJob(id);
        assertEq(uint8(j.state), uint8(JobState.Submitted));
        assertEq(j.resultRoot, keccak256("r"));
        assertEq(j.deadline, block.timestamp + WINDOW);
    }

    function test_SubmitResult_AtExecutionDeadline() public {
        uint256 id = _claimed();
        vm.warp(market.getJob(id).deadline);
        vm.prank(worker);
        market.submitResult(id, keccak256("r"), "bafyout");
    }

    function test_RevertWhen_SubmitOnOpenJob() public {
        uint256 id = _post();
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Open, JobState.Claimed)
        );
        vm.prank(worker);
        market.submitResult(id, keccak256("r"), "x");
    }

    function test_RevertWhen_SubmitUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_UnknownJob.selector, 3));
        market.submitResult(3, keccak256("r"), "x");
    }

    function test_RevertWhen_SubmitByOther() public {
        uint256 id = _claimed();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotWorker.selector, id, other, worker));
        vm.prank(other);
        market.submitResult(id, keccak256("r"), "x");
    }

    function test_RevertWhen_SubmitAfterExecutionDeadline() public {
        uint256 id = _claimed();
        uint64 d = market.getJob(id).deadline;
        vm.warp(d + 1);
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_ExecutionDeadlinePassed.selector, id, d, d + 1)
        );
        vm.prank(worker);
        market.submitResult(id, keccak256("r"), "x");
    }

    function test_RevertWhen_SubmitZeroRoot() public {
        uint256 id = _claimed();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_ZeroResultRoot.selector, id));
        vm.prank(worker);
        market.submitResult(id, bytes32(0), "x");
    }
}

contract JobMarketSettleTest is MarketBase {
    function test_FinalizeJob_PaysWorkerUnlocksStake() public {
        uint256 id = _submitted();
        vm.warp(market.getJob(id).deadline);
        vm.expectEmit(address(market));
        emit IJobMarket.JobFinalized(id, worker, REWARD);
        vm.prank(other); // anyone
        market.finalizeJob(id);
        assertEq(uint8(_state(id)), uint8(JobState.Finalized));
        assertEq(market.credits(worker), REWARD);
        assertEq(registry.stakeOf(worker).locked, 0);
        assertEq(registry.freeStake(worker), STAKE);
        uint256 before = worker.balance;
        vm.prank(worker);
        assertEq(market.withdraw(), REWARD);
        assertEq(worker.balance, before + REWARD);
        assertEq(address(market).balance, 0);
    }

    function test_RevertWhen_FinalizeInsideWindow() public {
        uint256 id = _submitted();
        uint64 d = market.getJob(id).deadline;
        vm.warp(d - 1);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_ChallengeWindowOpen.selector, id, d, d - 1));
        market.finalizeJob(id);
    }

    function test_RevertWhen_FinalizeWithOpenDispute() public {
        uint256 id = _submitted();
        game.open(id);
        vm.warp(market.getJob(id).deadline + 100);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_DisputesOpen.selector, id, 1));
        market.finalizeJob(id);
    }

    function test_RevertWhen_FinalizeClaimedJob() public {
        uint256 id = _claimed();
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Claimed, JobState.Submitted)
        );
        market.finalizeJob(id);
    }

    function test_RevertWhen_FinalizeTwice() public {
        uint256 id = _submitted();
        vm.warp(market.getJob(id).deadline);
        market.finalizeJob(id);
        vm.expectRevert(
            abi.encodeWithSelector(
                IJobMarket.JobMarket_WrongState.selector, id, JobState.Finalized, JobState.Submitted
            )
        );
        market.finalizeJob(id);
    }

    function test_CancelJob_RefundsPoster() public {
        uint256 id = _post();
        vm.expectEmit(address(market));
        emit IJobMarket.JobCancelled(id, poster, REWARD);
        vm.prank(poster);
        market.cancelJob(id);
        assertEq(uint8(_state(id)), uint8(JobState.Cancelled));
        assertEq(market.credits(poster), REWARD);
    }

    function test_RevertWhen_CancelByOther() public {
        uint256 id = _post();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotPoster.selector, id, other, poster));
        vm.prank(other);
        market.cancelJob(id);
    }

    function test_RevertWhen_CancelClaimedJob() public {
        uint256 id = _claimed();
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Claimed, JobState.Open)
        );
        vm.prank(poster);
        market.cancelJob(id);
    }

    function test_ExpireJob_UnclaimedAfterClaimDeadline() public {
        uint256 id = _post();
        vm.warp(market.getJob(id).deadline + 1);
        vm.expectEmit(address(market));
        emit IJobMarket.JobExpired(id, address(0), REWARD, 0);
        vm.prank(other);
        market.expireJob(id);
        assertEq(uint8(_state(id)), uint8(JobState.Expired));
        assertEq(market.credits(poster), REWARD);
    }

    function test_ExpireJob_ClaimedBurnsATenthPaysPosterOnlyItsReward() public {
        uint256 id = _claimed();
        // past the execution deadline AND the claim deadline: nothing to re-open, the job ends
        vm.warp(market.getJob(id).claimDeadline);
        assertGt(block.timestamp, market.getJob(id).deadline);
        uint256 slashed = STAKE / 10; // EXPIRY_SLASH_BPS = 1000, all burned
        vm.expectEmit(address(market));
        emit IJobMarket.JobExpired(id, worker, REWARD, slashed);
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.StakeSlashed(worker, poster, slashed, slashed, 0);
        vm.prank(other);
        market.expireJob(id);
        assertEq(uint8(_state(id)), uint8(JobState.Expired));
        assertEq(market.credits(poster), REWARD);
        assertEq(registry.credits(poster), 0, "the poster gains nothing from an expiry");
        assertEq(registry.totalBurned(), slashed);
        IWorkerRegistry.StakeInfo memory si = registry.stakeOf(worker);
        assertEq(si.total, STAKE - slashed);
        assertEq(si.locked, 0);
    }

    /// A worker that misses its execution deadline while the poster's claim window is still open:
    /// the same burn, but the job goes back to Open for another worker instead of ending; the
    /// poster gets no refund yet (its reward stays in escrow for the next worker).
    function test_ExpireJob_ClaimedBeforeClaimDeadlineReopens() public {
        uint256 id = _claimed();
        Job memory before = market.getJob(id);
        vm.warp(before.deadline + 1);
        assertLt(block.timestamp, before.claimDeadline);
        uint256 slashed = STAKE / 10;
        vm.expectEmit(address(market));
        emit IJobMarket.JobReopened(id, worker, slashed, before.claimDeadline);
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.StakeSlashed(worker, poster, slashed, slashed, 0);
        vm.prank(other);
        market.expireJob(id);
        Job memory j = market.getJob(id);
        assertEq(uint8(j.state), uint8(JobState.Open));
        assertEq(j.deadline, before.claimDeadline);
        assertEq(j.worker, address(0));
        assertEq(market.credits(poster), 0, "the reward stays in escrow");
        assertEq(registry.totalBurned(), slashed);
        assertEq(registry.stakeOf(worker).locked, 0);
        // another worker claims, submits and is paid the whole reward
        _stake(other, STAKE);
        vm.prank(other);
        market.claimJob(id);
        vm.prank(other);
        market.submitResult(id, keccak256("result"), "bafyoutputs");
        vm.warp(market.getJob(id).deadline);
        market.finalizeJob(id);
        assertEq(market.credits(other), REWARD);
        assertEq(address(market).balance, REWARD, "escrow == credits");
    }

    /// Re-opened, then nobody claims: the claim deadline expires it with the refund as usual.
    function test_ExpireJob_ReopenedThenUnclaimedRefunds() public {
        uint256 id = _claimed();
        vm.warp(market.getJob(id).deadline + 1);
        market.expireJob(id);
        vm.warp(market.getJob(id).claimDeadline + 1);
        vm.expectEmit(address(market));
        emit IJobMarket.JobExpired(id, address(0), REWARD, 0);
        market.expireJob(id);
        assertEq(uint8(_state(id)), uint8(JobState.Expired));
        assertEq(market.credits(poster), REWARD);
    }

    // ------------------------------------------------------------ postJobs (shards)

    function _specs(uint256 n) internal view returns (JobSpec[] memory specs, uint256[] memory rewards) {
        specs = new JobSpec[](n);
        rewards = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            specs[i] = _spec();
            specs[i].inputsRoot = keccak256(abi.encode("inputs", i));
            rewards[i] = REWARD / n + i;
        }
    }

    function _sum(uint256[] memory a) internal pure returns (uint256 t) {
        for (uint256 i; i < a.length; ++i) {
            t += a[i];
        }
    }

    function test_PostJobs_ConsecutiveShardsEachAJob() public {
        _post(); // job 1: the shards start at 2
        (JobSpec[] memory specs, uint256[] memory rewards) = _specs(3);
        uint256 total = _sum(rewards);
        vm.expectEmit(address(market));
        emit IJobMarket.JobPosted(2, poster, rewards[0], specs[0].specCid, specs[0].minGpuMemoryMiB);
        vm.expectEmit(address(market));
        emit IJobMarket.JobPosted(3, poster, rewards[1], specs[1].specCid, specs[1].minGpuMemoryMiB);
        vm.expectEmit(address(market));
        emit IJobMarket.JobPosted(4, poster, rewards[2], specs[2].specCid, specs[2].minGpuMemoryMiB);
        vm.expectEmit(address(market));
        emit IJobMarket.JobsPosted(2, 3, poster, total);
        vm.prank(poster);
        uint256 first = market.postJobs{value: total}(specs, rewards);
        assertEq(first, 2);
        assertEq(market.jobCount(), 4);
        for (uint256 i; i < 3; ++i) {
            Job memory j = market.getJob(first + i);
            assertEq(uint8(j.state), uint8(JobState.Open));
            assertEq(j.reward, rewards[i]);
            assertEq(j.inputsRoot, specs[i].inputsRoot);
            assertEq(j.poster, poster);
        }
        assertEq(address(market).balance, REWARD + total);
    }

    /// Shards are independent jobs: one shard's worker expires and the shard re-opens, one is
    /// slashed-free finalized, the third untouched; each pays its own reward.
    function test_PostJobs_ShardsLiveIndependently() public {
        (JobSpec[] memory specs, uint256[] memory rewards) = _specs(3);
        vm.prank(poster);
        uint256 first = market.postJobs{value: _sum(rewards)}(specs, rewards);
        _stake(worker, STAKE * 2);
        _stake(other, STAKE);
        vm.startPrank(worker);
        market.claimJob(first);
        market.claimJob(first + 1);
        market.submitResult(first, keccak256("r0"), "bafy0");
        vm.stopPrank();
        vm.warp(market.getJob(first + 1).deadline + 1);
        market.expireJob(first + 1); // re-opened
        assertEq(uint8(_state(first + 1)), uint8(JobState.Open));
        assertEq(uint8(_state(first)), uint8(JobState.Submitted));
        assertEq(uint8(_state(first + 2)), uint8(JobState.Open));
        vm.startPrank(other);
        market.claimJob(first + 1);
        market.submitResult(first + 1, keccak256("r1"), "bafy1");
        vm.stopPrank();
        vm.warp(block.timestamp + WINDOW + EXEC);
        market.finalizeJob(first);
        market.finalizeJob(first + 1);
        assertEq(market.credits(worker), rewards[0]);
        assertEq(market.credits(other), rewards[1]);
    }

    function test_RevertWhen_PostJobsBadShape() public {
        (JobSpec[] memory specs, uint256[] memory rewards) = _specs(2);
        uint256 total = _sum(rewards);
        vm.startPrank(poster);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidShardCount.selector, 0));
        market.postJobs{value: 0}(new JobSpec[](0), new uint256[](0));
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidShardCount.selector, 257));
        market.postJobs{value: 0}(new JobSpec[](257), new uint256[](257));
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_RewardsLength.selector, 2, 1));
        market.postJobs{value: total}(specs, new uint256[](1));
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_RewardsSum.selector, total, total + 1));
        market.postJobs{value: total + 1}(specs, rewards);
        rewards[1] = 0;
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidReward.selector, 0));
        market.postJobs{value: rewards[0]}(specs, rewards);
        (specs, rewards) = _specs(2);
        specs[1].numUnits = 0; // one bad shard reverts the whole call
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidSpec.selector, "numUnits"));
        market.postJobs{value: total}(specs, rewards);
        vm.stopPrank();
        assertEq(market.jobCount(), 0);
    }

    /// Gas of one postJobs call per shard, against postJob (docs/protocol.md 4.12).
    function test_Gas_PostJobs16() public {
        (JobSpec[] memory specs, uint256[] memory rewards) = _specs(16);
        uint256 total = _sum(rewards);
        vm.prank(poster);
        uint256 g = gasleft();
        market.postJobs{value: total}(specs, rewards);
        g -= gasleft();
        emit log_named_uint("postJobs(16) gas per shard", g / 16);
        assertLt(g / 16, 160_000);
    }

    function test_RevertWhen_ExpireOpenBeforeClaimDeadline() public {
        uint256 id = _post();
        uint64 d = market.getJob(id).deadline;
        vm.warp(d);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotExpired.selector, id, d, d));
        market.expireJob(id);
    }

    function test_RevertWhen_ExpireClaimedBeforeDeadline() public {
        uint256 id = _claimed();
        uint64 d = market.getJob(id).deadline;
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotExpired.selector, id, d, block.timestamp));
        market.expireJob(id);
    }

    function test_RevertWhen_ExpireSubmittedJob() public {
        uint256 id = _submitted();
        vm.warp(block.timestamp + 365 days);
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Submitted, JobState.Claimed)
        );
        market.expireJob(id);
    }

    function test_RevertWhen_ExpireUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_UnknownJob.selector, 9));
        market.expireJob(9);
    }

    function test_RevertWhen_WithdrawNothing() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NothingToWithdraw.selector, other));
        vm.prank(other);
        market.withdraw();
    }

    function test_RevertWhen_WithdrawToRejectingContract() public {
        EthRejecter r = new EthRejecter();
        vm.deal(address(this), REWARD);
        uint256 id = r.post{value: REWARD}(market, _spec());
        r.cancel(market, id);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_TransferFailed.selector, address(r), REWARD));
        r.withdraw(market);
        assertEq(market.credits(address(r)), REWARD, "credit kept after a failed payout");
    }

    function test_Views() public {
        assertEq(market.registry(), address(registry));
        assertEq(market.disputeGame(), address(game));
        assertEq(market.EXPIRY_SLASH_BPS(), 1000);
        assertEq(market.SLASH_CHALLENGER_BPS(), 5000);
        assertEq(market.MIN_EXECUTION_TIME(), 300);
        assertEq(market.MIN_BOND_BPS(), 500);
        assertEq(market.minDisputeBond(), MIN_BOND);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_UnknownJob.selector, 1));
        market.getJob(1);
    }
}

contract JobMarketDisputeHooksTest is MarketBase {
    function test_DisputeContext_ReportsJob() public {
        uint256 id = _submitted();
        IJobMarket.DisputeContext memory c = market.disputeContext(id);
        assertEq(c.worker, worker);
        assertEq(c.poster, poster);
        assertEq(c.resultRoot, keccak256("result"));
        assertEq(c.programRoot, keccak256("program"));
        assertEq(c.inputsRoot, keccak256("inputs"));
        assertEq(c.numUnits, 4);
        assertEq(c.bond, BOND);
        assertEq(c.challengeDeadline, block.timestamp + WINDOW);
        assertEq(c.state, uint8(JobState.Submitted));
    }

    function test_DisputeContext_NoChallengeDeadlineBeforeSubmit() public {
        uint256 id = _claimed();
        assertEq(market.disputeContext(id).challengeDeadline, 0);
    }

    function test_RevertWhen_DisputeContextUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_UnknownJob.selector, 5));
        market.disputeContext(5);
    }

    function test_RevertWhen_HooksCalledByOther() public {
        uint256 id = _submitted();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotDisputeGame.selector, other));
        vm.prank(other);
        market.onChallengeOpened(id);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NotDisputeGame.selector, other));
        vm.prank(other);
        market.onChallengeResolved(id, 1, other, true);
    }

    function test_OnChallengeOpened_CountsAndEmits() public {
        uint256 id = _submitted();
        vm.expectEmit(address(market));
        emit IJobMarket.ChallengeOpened(id, 1);
        game.open(id);
        game.open(id);
        assertEq(market.getJob(id).openDisputes, 2);
    }

    function test_RevertWhen_ChallengeOpenedAtDeadline() public {
        uint256 id = _submitted();
        uint64 d = market.getJob(id).deadline;
        vm.warp(d);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_ChallengeWindowClosed.selector, id, d, d));
        game.open(id);
    }

    function test_RevertWhen_ChallengeOpenedOnClaimedJob() public {
        uint256 id = _claimed();
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Claimed, JobState.Submitted)
        );
        game.open(id);
    }

    function test_RevertWhen_ResolveWithoutOpenDispute() public {
        uint256 id = _submitted();
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_NoOpenDispute.selector, id));
        game.resolve(id, 1, challenger, true);
    }

    function test_OnChallengeResolved_WorkerWonMovesNothingThenFinalizes() public {
        uint256 id = _submitted();
        uint256 g = game.open(id);
        vm.expectEmit(address(market));
        emit IJobMarket.ChallengeResolved(id, g, challenger, false, 0);
        game.resolve(id, g, challenger, false);
        assertEq(uint8(_state(id)), uint8(JobState.Submitted));
        assertEq(registry.stakeOf(worker).locked, STAKE);
        assertEq(market.credits(poster), 0);
        vm.warp(market.getJob(id).deadline);
        market.finalizeJob(id);
        assertEq(market.credits(worker), REWARD);
    }

    function test_OnChallengeResolved_WorkerLostSlashesToChallengerRefundsPoster() public {
        uint256 id = _submitted();
        uint256 g = game.open(id);
        uint256 burned = uint256(STAKE) / 2; // SLASH_CHALLENGER_BPS = 5000: half paid, half burned
        vm.expectEmit(address(market));
        emit IJobMarket.JobSlashed(id, worker, g, STAKE);
        vm.expectEmit(address(market));
        emit IJobMarket.SlashSettled(id, worker, g, challenger, STAKE, STAKE - burned);
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.StakeSlashed(worker, challenger, STAKE, burned, STAKE - burned);
        game.resolve(id, g, challenger, true);
        assertTrue(market.isSlashed(id));
        assertEq(uint8(_state(id)), uint8(JobState.Slashed));
        assertEq(market.credits(poster), REWARD);
        assertEq(registry.credits(challenger), STAKE - burned);
        assertEq(registry.totalBurned(), burned);
        IWorkerRegistry.StakeInfo memory si = registry.stakeOf(worker);
        assertEq(si.total, 0);
        assertEq(si.locked, 0);
        vm.prank(challenger);
        assertEq(registry.withdraw(), STAKE - burned);
    }

    function test_OnChallengeResolved_SecondLossMovesNothing() public {
        uint256 id = _submitted();
        uint256 g1 = game.open(id);
        uint256 g2 = game.open(id);
        game.resolve(id, g1, challenger, true);
        game.resolve(id, g2, other, true);
        assertEq(registry.credits(other), 0);
        assertEq(registry.credits(challenger), STAKE / 2);
        assertEq(market.getJob(id).openDisputes, 0);
        assertEq(market.credits(poster), REWARD);
        assertEq(uint8(_state(id)), uint8(JobState.Slashed));
        // A Slashed job cannot be finalized, expired or challenged again.
        vm.warp(block.timestamp + 365 days);
        vm.expectRevert(
            abi.encodeWithSelector(IJobMarket.JobMarket_WrongState.selector, id, JobState.Slashed, JobState.Submitted)
        );
        market.finalizeJob(id);
    }

    function test_IsSlashed_FalseForLiveJob() public {
        uint256 id = _submitted();
        assertFalse(market.isSlashed(id));
        assertFalse(market.isSlashed(99));
    }
}
