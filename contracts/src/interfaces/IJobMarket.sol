// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Job, JobSpec, JobState} from "../types/JobTypes.sol";

/// @title IJobMarket
/// @notice Jobs with the reward in escrow: post, claim (locks stake), submit, finalize after the
///         challenge window, cancel, expire; the hooks the dispute game calls. Pull payments only.
interface IJobMarket {
    // ---------------------------------------------------------------- errors
    error JobMarket_UnknownJob(uint256 jobId);
    /// @notice The job is in `actual` but the call needs `expected`.
    error JobMarket_WrongState(uint256 jobId, JobState actual, JobState expected);
    error JobMarket_NotPoster(uint256 jobId, address caller, address poster);
    error JobMarket_NotWorker(uint256 jobId, address caller, address worker);
    error JobMarket_NotDisputeGame(address caller);
    /// @notice A spec field is out of range; `field` names it (e.g. "numUnits").
    error JobMarket_InvalidSpec(string field);
    error JobMarket_InvalidReward(uint256 value);
    error JobMarket_ZeroResultRoot(uint256 jobId);
    /// @notice The claim deadline passed (`deadline` < `nowTs`).
    error JobMarket_ClaimDeadlinePassed(uint256 jobId, uint64 deadline, uint256 nowTs);
    /// @notice The execution deadline passed (`deadline` < `nowTs`).
    error JobMarket_ExecutionDeadlinePassed(uint256 jobId, uint64 deadline, uint256 nowTs);
    /// @notice No game may open at or after the challenge deadline.
    error JobMarket_ChallengeWindowClosed(uint256 jobId, uint64 deadline, uint256 nowTs);
    /// @notice finalizeJob before the challenge deadline.
    error JobMarket_ChallengeWindowOpen(uint256 jobId, uint64 deadline, uint256 nowTs);
    /// @notice finalizeJob while `openDisputes` games are open.
    error JobMarket_DisputesOpen(uint256 jobId, uint32 openDisputes);
    error JobMarket_NoOpenDispute(uint256 jobId);
    /// @notice expireJob before the deadline of the job's state.
    error JobMarket_NotExpired(uint256 jobId, uint64 deadline, uint256 nowTs);
    error JobMarket_NothingToWithdraw(address account);
    error JobMarket_TransferFailed(address to, uint256 amount);
    /// @notice postJobs takes 1..MAX_SHARDS specs.
    error JobMarket_InvalidShardCount(uint256 count);
    /// @notice postJobs needs one reward per spec.
    error JobMarket_RewardsLength(uint256 specs, uint256 rewards);
    /// @notice postJobs: the rewards must add up to msg.value exactly.
    error JobMarket_RewardsSum(uint256 sum, uint256 value);
    /// @notice The deployment's absolute bond floor must be non-zero.
    error JobMarket_ZeroMinBond();

    // ---------------------------------------------------------------- events
    /// @notice A job was posted. Carries only what is NOT stored (the spec CID and the hardware
    ///         requirement): everything else is one `getJob(jobId)` away. Emitting the whole JobSpec
    ///         here cost 3.5k gas more per postJob and pushed it over its 150k budget.
    event JobPosted(uint256 indexed jobId, address indexed poster, uint256 reward, string specCid, uint32 minGpuMemoryMiB);
    event JobClaimed(uint256 indexed jobId, address indexed worker, uint64 executionDeadline);
    event ResultSubmitted(
        uint256 indexed jobId, address indexed worker, bytes32 resultRoot, string outputsCid, uint64 challengeDeadline
    );
    event JobFinalized(uint256 indexed jobId, address indexed worker, uint256 reward);
    event JobCancelled(uint256 indexed jobId, address indexed poster, uint256 refund);
    /// @notice `count` jobs (the shards of one sharded job) were posted in one call, with ids
    ///         firstJobId .. firstJobId + count - 1 in shard order; each also has its JobPosted.
    event JobsPosted(uint256 indexed firstJobId, uint256 count, address indexed poster, uint256 totalReward);
    /// @notice A claimed job missed its execution deadline while its claim deadline was still ahead:
    ///         `slashed` of the worker's stake burned and the job Open again until `claimDeadline`.
    event JobReopened(uint256 indexed jobId, address indexed worker, uint256 slashed, uint64 claimDeadline);
    /// @notice `slashed` is 0 when the job expired unclaimed.
    event JobExpired(uint256 indexed jobId, address indexed worker, uint256 refund, uint256 slashed);
    event ChallengeOpened(uint256 indexed jobId, uint32 openDisputes);
    event ChallengeResolved(
        uint256 indexed jobId, uint256 indexed gameId, address indexed challenger, bool workerLost, uint32 openDisputes
    );
    /// @notice The worker lost game `gameId`: the job is Slashed and the poster refunded. The stake
    ///         (`stake`) is taken when the job's last game ends (SlashSettled).
    event JobSlashed(uint256 indexed jobId, address indexed worker, uint256 indexed gameId, uint256 stake);
    /// @notice Every game of a Slashed job ended: `stake` taken from `worker`, `paid` of it credited
    ///         (in the registry) to `challenger`, who opened `gameId`, the earliest game the worker
    ///         lost; the rest burned.
    event SlashSettled(
        uint256 indexed jobId, address indexed worker, uint256 gameId, address indexed challenger, uint256 stake, uint256 paid
    );
    event Withdrawn(address indexed account, uint256 amount);

    // ---------------------------------------------------------------- dispute game interface
    struct DisputeContext {
        address worker;
        address poster;
        bytes32 resultRoot;
        bytes32 programRoot;
        bytes32 inputsRoot;
        uint32 numUnits;
        uint96 bond;
        uint64 challengeDeadline;
        uint8 state;
    }

    /// @notice Everything the dispute game needs to know about `jobId` (reverts for unknown jobs).
    function disputeContext(uint256 jobId) external view returns (DisputeContext memory);
    /// @notice game only: job must be Submitted and block.timestamp < challengeDeadline; openDisputes++.
    function onChallengeOpened(uint256 jobId) external;
    /// @notice game only: game `gameId` (opened by `challenger`) ended; openDisputes--. If workerLost:
    ///         the job becomes Slashed (the escrowed reward credited back to the poster) unless it is
    ///         already, and the game is remembered if it is the earliest one the worker lost. When
    ///         the last open game of a Slashed job ends, the worker's locked stake is slashed:
    ///         SLASH_CHALLENGER_BPS of it to the earliest lost game's challenger, the rest burned.
    ///         If !workerLost nothing else moves here (the game pays the bond itself).
    function onChallengeResolved(uint256 jobId, uint256 gameId, address challenger, bool workerLost) external;
    /// @notice True once a worker lost a game on `jobId`.
    function isSlashed(uint256 jobId) external view returns (bool);

    // ---------------------------------------------------------------- lifecycle
    /// @notice Post a job; msg.value is the reward held in escrow. Returns the new job id (from 1).
    function postJob(JobSpec calldata spec) external payable returns (uint256 jobId);
    /// @notice Post the shards of one job in one call: one job per spec (consecutive ids, returned
    ///         first), `rewards[i]` of msg.value escrowed for shard i (they must add up to msg.value).
    function postJobs(JobSpec[] calldata specs, uint256[] calldata rewards) external payable returns (uint256 firstJobId);
    /// @notice Claim an Open job before its claim deadline; locks `requiredStake` of free stake.
    function claimJob(uint256 jobId) external;
    /// @notice The claiming worker commits its result before the execution deadline.
    function submitResult(uint256 jobId, bytes32 resultRoot, string calldata outputsCid) external;
    /// @notice Anyone, once the challenge window passed with no open game: worker paid, stake unlocked.
    function finalizeJob(uint256 jobId) external;
    /// @notice The poster cancels an Open job; the reward is credited back.
    function cancelJob(uint256 jobId) external;
    /// @notice Anyone: an Open job past its claim deadline (refund), or a Claimed job past its
    ///         execution deadline (EXPIRY_SLASH_BPS of the locked stake burned, rounded up): Open
    ///         again when its claim deadline is still ahead (JobReopened), else Expired with a refund.
    function expireJob(uint256 jobId) external;
    /// @notice Pay out the caller's credits (rewards, refunds).
    function withdraw() external returns (uint256 amount);

    // ---------------------------------------------------------------- views
    function getJob(uint256 jobId) external view returns (Job memory);
    function jobCount() external view returns (uint256);
    function credits(address account) external view returns (uint256);
    function registry() external view returns (address);
    function disputeGame() external view returns (address);
}
