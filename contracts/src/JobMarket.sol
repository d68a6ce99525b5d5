// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IJobMarket} from "./interfaces/IJobMarket.sol";
import {IWorkerRegistry} from "./interfaces/IWorkerRegistry.sol";
import {Constants} from "./libraries/Constants.sol";
import {Job, JobSpec, JobState} from "./types/JobTypes.sol";

/// @title JobMarket
/// @notice Jobs with the reward in escrow. Open -> Claimed -> Submitted -> Finalized | Slashed;
///         Open -> Cancelled | Expired; Claimed -> Expired. Every waiting state has a deadline after
///         which anyone can move it on (expireJob / finalizeJob), so no funds are stuck.
/// @dev No owner: the registry and the dispute game are fixed at deployment (Deploy.s.sol predicts
///      the addresses). Payments are credited and pulled with `withdraw`.
///      INVARIANT (escrow): address(this).balance == sum(reward of Open/Claimed/Submitted jobs)
///        + sum(credits)   (+ forced ETH, never counted).
///      Economics (docs/protocol.md 4.11): floors on executionTime and disputeBond at post time; an
///      expiry burns part of the stake and pays the poster nothing beyond its own reward; a lost
///      game slashes the whole locked stake once every game of the job has ended, paying
///      SLASH_CHALLENGER_BPS to the challenger of the EARLIEST-opened game the worker lost (so a
///      cheater cannot hand the slash to a puppet by losing a later game faster) and burning the rest.
contract JobMarket is IJobMarket {
    /// @notice Fraction of the locked stake burned when a claimed job misses its execution deadline.
    uint256 public constant EXPIRY_SLASH_BPS = Constants.EXPIRY_SLASH_BPS;
    /// @notice Fraction of a slashed stake paid to the winning challenger (the rest is burned).
    uint256 public constant SLASH_CHALLENGER_BPS = Constants.SLASH_CHALLENGER_BPS;
    /// @notice Protocol floor of JobSpec.executionTime (seconds).
    uint32 public constant MIN_EXECUTION_TIME = Constants.MIN_EXECUTION_TIME;
    /// @notice Floor of JobSpec.disputeBond relative to requiredStake (basis points).
    uint256 public constant MIN_BOND_BPS = Constants.MIN_BOND_BPS;
    /// @notice Upper bound of every duration in a spec (and of claimDeadline - now): keeps the
    ///         uint64 deadline arithmetic far from overflow and jobs from locking stake for ages.
    uint64 public constant MAX_DURATION = 365 days;
    /// @notice Most jobs (shards) one postJobs call may post: bounds its gas far below a block.
    uint256 public constant MAX_SHARDS = 256;

    IWorkerRegistry internal immutable _registry;
    address internal immutable _disputeGame;
    /// @notice Absolute floor of JobSpec.disputeBond (wei), set at deployment for the chain's gas
    ///         prices: at least what one game makes the worker spend on defence.
    uint96 public immutable minDisputeBond;

    mapping(uint256 jobId => Job) internal _jobs;
    /// @inheritdoc IJobMarket
    mapping(address account => uint256) public credits;
    /// @dev Starts at 1 (set in the constructor) so that every postJob pays a warm-ish non-zero to
    ///      non-zero write instead of the 0 -> 1 write (~17k gas) on the first job.
    uint256 internal _nextJobId;

    modifier onlyGame() {
        if (msg.sender != _disputeGame) revert JobMarket_NotDisputeGame(msg.sender);
        _;
    }

    constructor(IWorkerRegistry registry_, address disputeGame_, uint96 minDisputeBond_) {
        if (minDisputeBond_ == 0) revert JobMarket_ZeroMinBond();
        _registry = registry_;
        _disputeGame = disputeGame_;
        minDisputeBond = minDisputeBond_;
        _nextJobId = 1;
    }

    // ================================================================ lifecycle

    /// @inheritdoc IJobMarket
    function postJob(JobSpec calldata spec) external payable returns (uint256 jobId) {
        if (msg.value == 0 || msg.value > type(uint96).max) revert JobMarket_InvalidReward(msg.value);
        jobId = _post(spec, uint96(msg.value));
    }

    /// @inheritdoc IJobMarket
    function postJobs(JobSpec[] calldata specs, uint256[] calldata rewards)
        external
        payable
        returns (uint256 firstJobId)
    {
        uint256 n = specs.length;
        if (n == 0 || n > MAX_SHARDS) revert JobMarket_InvalidShardCount(n);
        if (rewards.length != n) revert JobMarket_RewardsLength(n, rewards.length);
        firstJobId = _nextJobId;
        uint256 total = 0;
        for (uint256 i; i < n; ++i) {
            uint256 r = rewards[i];
            if (r == 0 || r > type(uint96).max) revert JobMarket_InvalidReward(r);
            total += r; // <= 256 * 2^96: no overflow
            // forge-lint: disable-next-line(unsafe-typecast) -- checked above
            _post(specs[i], uint96(r));
        }
        if (total != msg.value) revert JobMarket_RewardsSum(total, msg.value);
        emit JobsPosted(firstJobId, n, msg.sender, total);
    }

    function _post(JobSpec calldata spec, uint96 reward) internal returns (uint256 jobId) {
        _checkSpec(spec);
        jobId = _nextJobId++;
        Job storage j = _jobs[jobId];
        j.poster = msg.sender;
        j.reward = reward;
        j.requiredStake = spec.requiredStake;
        j.disputeBond = spec.disputeBond;
        j.executionTime = spec.executionTime;
        j.challengeWindow = spec.challengeWindow;
        j.numUnits = spec.numUnits;
        j.deadline = spec.claimDeadline;
        j.claimDeadline = spec.claimDeadline;
        j.state = JobState.Open;
        j.programRoot = spec.programRoot;
        j.inputsRoot = spec.inputsRoot;
        emit JobPosted(jobId, msg.sender, reward, spec.specCid, spec.minGpuMemoryMiB);
    }

    /// @inheritdoc IJobMarket
    function claimJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        _expectState(jobId, j.state, JobState.Open);
        uint64 claimDeadline = j.deadline; // while Open, `deadline` is the claim deadline
        if (block.timestamp > claimDeadline) {
            revert JobMarket_ClaimDeadlinePassed(jobId, claimDeadline, block.timestamp);
        }
        uint64 deadline = uint64(block.timestamp) + j.executionTime;
        j.worker = msg.sender;
        j.state = JobState.Claimed;
        j.deadline = deadline;
        emit JobClaimed(jobId, msg.sender, deadline);
        // Reverts with WorkerRegistry_InsufficientFreeStake when the worker cannot cover the job.
        _registry.lock(msg.sender, j.requiredStake);
    }

    /// @inheritdoc IJobMarket
    function submitResult(uint256 jobId, bytes32 resultRoot, string calldata outputsCid) external {
        Job storage j = _jobs[jobId];
        _expectState(jobId, j.state, JobState.Claimed);
        if (msg.sender != j.worker) revert JobMarket_NotWorker(jobId, msg.sender, j.worker);
        uint64 deadline = j.deadline;
        if (block.timestamp > deadline) revert JobMarket_ExecutionDeadlinePassed(jobId, deadline, block.timestamp);
        if (resultRoot == bytes32(0)) revert JobMarket_ZeroResultRoot(jobId);
        uint64 challengeDeadline = uint64(block.timestamp) + j.challengeWindow;
        j.state = JobState.Submitted;
        j.deadline = challengeDeadline;
        j.resultRoot = resultRoot;
        emit ResultSubmitted(jobId, msg.sender, resultRoot, outputsCid, challengeDeadline);
    }

    /// @inheritdoc IJobMarket
    function finalizeJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        _expectState(jobId, j.state, JobState.Submitted);
        uint64 deadline = j.deadline;
        // INVARIANT: games open only while block.timestamp < deadline (onChallengeOpened), and
        // finalization needs block.timestamp >= deadline: no game can open after finalization.
        if (block.timestamp < deadline) revert JobMarket_ChallengeWindowOpen(jobId, deadline, block.timestamp);
        if (j.openDisputes != 0) revert JobMarket_DisputesOpen(jobId, j.openDisputes);
        j.state = JobState.Finalized;
        address worker = j.worker;
        uint96 reward = j.reward;
        credits[worker] += reward;
        emit JobFinalized(jobId, worker, reward);
        _registry.unlock(worker, j.requiredStake);
    }

    /// @inheritdoc IJobMarket
    function cancelJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        _expectState(jobId, j.state, JobState.Open);
        address poster = j.poster;
        if (msg.sender != poster) revert JobMarket_NotPoster(jobId, msg.sender, poster);
        j.state = JobState.Cancelled;
        credits[poster] += j.reward;
        emit JobCancelled(jobId, poster, j.reward);
    }

    /// @inheritdoc IJobMarket
    function expireJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        JobState state = j.state;
        if (state != JobState.Open && state != JobState.Claimed) {
            _expectState(jobId, state, JobState.Claimed);
        }
        uint64 deadline = j.deadline; // Open: the claim deadline; Claimed: the execution deadline
        // Strictly after: claimJob / submitResult are allowed at block.timestamp == deadline.
        if (block.timestamp <= deadline) revert JobMarket_NotExpired(jobId, deadline, block.timestamp);
        address poster = j.poster;
        if (state == JobState.Claimed) {
            address worker = j.worker;
            uint96 locked = j.requiredStake;
            // forge-lint: disable-next-line(unsafe-typecast) -- at most `locked`, a uint96
            uint96 amount = uint96(Constants.bpsUp(locked, EXPIRY_SLASH_BPS));
            uint64 claimDeadline = j.claimDeadline;
            if (block.timestamp < claimDeadline) {
                // The poster's claim window is still open: the job goes back to Open for another
                // worker (a shard of a sharded job is re-opened without touching the others).
                j.state = JobState.Open;
                j.deadline = claimDeadline;
                j.worker = address(0);
                emit JobReopened(jobId, worker, amount, claimDeadline);
            } else {
                j.state = JobState.Expired;
                credits[poster] += j.reward;
                emit JobExpired(jobId, worker, j.reward, amount);
            }
            // SAFETY: one of the two slash paths (missed execution deadline). All of it is burned:
            // the poster only gets its own reward back, so posting jobs to expire them never pays.
            // slither-disable-next-line unused-return -- `burned` is in the registry's StakeSlashed event
            _registry.slash(worker, locked, amount, poster, 0);
        } else {
            j.state = JobState.Expired;
            credits[poster] += j.reward;
            emit JobExpired(jobId, address(0), j.reward, 0);
        }
    }

    /// @inheritdoc IJobMarket
    function withdraw() external returns (uint256 amount) {
        amount = credits[msg.sender];
        if (amount == 0) revert JobMarket_NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        // SAFETY: checks-effects-interactions; the credit was zeroed before the call.
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert JobMarket_TransferFailed(msg.sender, amount);
    }

    // ================================================================ dispute game hooks

    /// @inheritdoc IJobMarket
    function onChallengeOpened(uint256 jobId) external onlyGame {
        Job storage j = _jobs[jobId];
        _expectState(jobId, j.state, JobState.Submitted);
        uint64 deadline = j.deadline;
        if (block.timestamp >= deadline) revert JobMarket_ChallengeWindowClosed(jobId, deadline, block.timestamp);
        uint32 open = j.openDisputes + 1;
        j.openDisputes = open;
        emit ChallengeOpened(jobId, open);
    }

    /// @inheritdoc IJobMarket
    function onChallengeResolved(uint256 jobId, uint256 gameId, address challenger, bool workerLost)
        external
        onlyGame
    {
        Job storage j = _jobs[jobId];
        uint32 open = j.openDisputes;
        if (open == 0) revert JobMarket_NoOpenDispute(jobId);
        open -= 1;
        j.openDisputes = open;
        emit ChallengeResolved(jobId, gameId, challenger, workerLost, open);
        if (workerLost) {
            if (j.state != JobState.Slashed) {
                // INVARIANT: openDisputes > 0 only on Submitted (or Slashed) jobs, so the job is Submitted.
                j.state = JobState.Slashed;
                credits[j.poster] += j.reward;
                emit JobSlashed(jobId, j.worker, gameId, j.requiredStake);
            }
            // INVARIANT: games are numbered in the order they opened; the earliest one the worker
            // lost decides who is paid, whichever of them ended first.
            uint64 first = j.firstWonGame;
            if (first == 0 || gameId < first) {
                // forge-lint: disable-next-line(unsafe-typecast) -- game ids count games, far below 2^64
                j.firstWonGame = uint64(gameId);
                j.firstWinner = challenger;
            }
        }
        // The slash waits for the last game: a game opened earlier than the one lost so far may
        // still end with the worker losing it, and its challenger is then the one paid.
        // INVARIANT: no game opens on a Slashed job, so `open` reaches 0 there exactly once.
        if (open == 0 && j.state == JobState.Slashed) _settleSlash(jobId, j);
    }

    /// @dev Slash the whole locked stake of a Slashed job whose games all ended: SLASH_CHALLENGER_BPS
    ///      of it (rounded down, so the burn rounds up) to the challenger of the earliest game the
    ///      worker lost, the rest burned.
    function _settleSlash(uint256 jobId, Job storage j) internal {
        uint96 locked = j.requiredStake;
        // forge-lint: disable-next-line(unsafe-typecast) -- at most `locked`, a uint96
        uint96 paid = uint96(uint256(locked) * SLASH_CHALLENGER_BPS / Constants.BPS);
        address winner = j.firstWinner;
        emit SlashSettled(jobId, j.worker, j.firstWonGame, winner, locked, paid);
        // SAFETY: the other slash path: only the dispute game's verdicts reach here.
        // slither-disable-next-line unused-return -- `burned` is in the registry's StakeSlashed event
        _registry.slash(j.worker, locked, locked, winner, paid);
    }

    // ================================================================ views

    /// @inheritdoc IJobMarket
    function disputeContext(uint256 jobId) external view returns (DisputeContext memory ctx) {
        Job storage j = _jobs[jobId];
        if (j.state == JobState.None) revert JobMarket_UnknownJob(jobId);
        ctx = DisputeContext({
            worker: j.worker,
            poster: j.poster,
            resultRoot: j.resultRoot,
            programRoot: j.programRoot,
            inputsRoot: j.inputsRoot,
            numUnits: j.numUnits,
            bond: j.disputeBond,
            challengeDeadline: j.state == JobState.Submitted || j.state == JobState.Slashed ? j.deadline : 0,
            state: uint8(j.state)
        });
    }

    /// @inheritdoc IJobMarket
    function isSlashed(uint256 jobId) external view returns (bool) {
        // slither-disable-next-line incorrect-equality -- an enum state, not a balance or a time
        return _jobs[jobId].state == JobState.Slashed;
    }

    /// @inheritdoc IJobMarket
    function getJob(uint256 jobId) external view returns (Job memory) {
        Job memory j = _jobs[jobId];
        // slither-disable-next-line incorrect-equality -- an enum state, not a balance or a time
        if (j.state == JobState.None) revert JobMarket_UnknownJob(jobId);
        return j;
    }

    /// @inheritdoc IJobMarket
    function jobCount() external view returns (uint256) {
        return _nextJobId - 1;
    }

    /// @inheritdoc IJobMarket
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IJobMarket
    function disputeGame() external view returns (address) {
        return _disputeGame;
    }

    // ================================================================ internals

    function _expectState(uint256 jobId, JobState actual, JobState expected) internal pure {
        if (actual == JobState.None) revert JobMarket_UnknownJob(jobId);
        if (actual != expected) revert JobMarket_WrongState(jobId, actual, expected);
    }

    function _checkSpec(JobSpec calldata spec) internal view {
        if (bytes(spec.specCid).length == 0) revert JobMarket_InvalidSpec("specCid");
        if (spec.programRoot == bytes32(0)) revert JobMarket_InvalidSpec("programRoot");
        if (spec.inputsRoot == bytes32(0)) revert JobMarket_InvalidSpec("inputsRoot");
        if (spec.numUnits == 0) revert JobMarket_InvalidSpec("numUnits");
        if (spec.requiredStake == 0) revert JobMarket_InvalidSpec("requiredStake");
        // INVARIANT: a game or data request always costs its opener at least the absolute floor and
        // MIN_BOND_BPS of the stake it freezes (and the bond burn is a non-zero share of it).
        if (
            spec.disputeBond < minDisputeBond
                || spec.disputeBond < Constants.bpsUp(spec.requiredStake, MIN_BOND_BPS)
        ) revert JobMarket_InvalidSpec("disputeBond");
        if (spec.claimDeadline < block.timestamp || spec.claimDeadline > block.timestamp + MAX_DURATION) {
            revert JobMarket_InvalidSpec("claimDeadline");
        }
        if (spec.executionTime < MIN_EXECUTION_TIME || spec.executionTime > MAX_DURATION) {
            revert JobMarket_InvalidSpec("executionTime");
        }
        if (spec.challengeWindow == 0 || spec.challengeWindow > MAX_DURATION) {
            revert JobMarket_InvalidSpec("challengeWindow");
        }
    }
}
