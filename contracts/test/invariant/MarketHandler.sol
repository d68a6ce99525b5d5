// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {Job, JobSpec, JobState} from "../../src/types/JobTypes.sol";
import {MockDisputeGame} from "../mocks/MockDisputeGame.sol";

/// @notice Drives JobMarket + WorkerRegistry through random but valid-looking sequences, with ghost
///         variables computed here from the published rules (never read back from the contracts).
contract MarketHandler is Test {
    JobMarket public market;
    WorkerRegistry public registry;
    MockDisputeGame public game;

    address[] public actors;
    uint256[] public jobIds;

    // ---- ghosts (README properties M3, M6, M7, M8)
    uint256 public ghostIn; // ETH sent into market + registry
    uint256 public ghostOut; // ETH paid out by both
    uint256 public ghostBurned; // expected totalBurned
    uint256 public ghostSlashCredits; // expected sum of registry credits ever granted by slashes
    uint256 public ghostRegistryCreditsWithdrawn;
    uint256 public ghostFirstLosses; // jobs that went Slashed
    uint256 public ghostSlashCalls; // slashes that happened (expiry of a Claimed job or first lost game)
    bool public ghostUnauthorizedSlash; // a slash path that is not expiry/game succeeded
    bool public ghostTerminalChanged; // a terminal state changed
    bool public ghostWrongExpiry; // a missed execution deadline neither re-opened (claim window open) nor ended the job (M11)
    mapping(uint256 jobId => uint32) public ghostOpenGames;
    /// Open game ids per job (the mock numbers games in opening order, like DisputeGame).
    mapping(uint256 jobId => uint256[]) internal _openIds;
    mapping(uint256 gameId => address) public ghostChallengerOf;
    /// Lowest game id the worker lost per job, and its challenger (M9).
    mapping(uint256 jobId => uint256) public ghostFirstWonGame;
    mapping(uint256 jobId => address) public ghostFirstWinner;
    /// A settled slash paid someone else than the earliest lost game's challenger, or burned
    /// less than half (M9, M10).
    bool public ghostWrongWinnerPaid;
    bool public ghostBurnBelowHalf;
    mapping(uint256 jobId => JobState) internal _terminal;
    /// Effective (not early-returned) actions by name, to show what the runs reached.
    mapping(string action => uint256) public ghostDone;

    constructor(JobMarket market_, WorkerRegistry registry_, MockDisputeGame game_) {
        market = market_;
        registry = registry_;
        game = game_;
        for (uint256 i = 0; i < 4; i++) {
            address a = makeAddr(string(abi.encodePacked("actor", vm.toString(i))));
            actors.push(a);
            vm.deal(a, 1_000_000 ether);
        }
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % actors.length];
    }

    /// @dev The first job in `state` at or after a random position (wrapping), so that actions find
    ///      a job they apply to instead of returning early most of the time.
    function _jobIn(uint256 seed, JobState state) internal view returns (uint256 id, bool ok) {
        uint256 n = jobIds.length;
        for (uint256 k = 0; k < n; k++) {
            id = jobIds[(seed % n + k) % n];
            if (market.getJob(id).state == state) return (id, true);
        }
        return (0, false);
    }

    function _jobWithGame(uint256 seed) internal view returns (uint256 id, bool ok) {
        uint256 n = jobIds.length;
        for (uint256 k = 0; k < n; k++) {
            id = jobIds[(seed % n + k) % n];
            if (ghostOpenGames[id] > 0) return (id, true);
        }
        return (0, false);
    }

    /// @dev After every action: a terminal state, once seen, must never change (M7).
    modifier observe() {
        _;
        for (uint256 i = 0; i < jobIds.length; i++) {
            JobState s = market.getJob(jobIds[i]).state;
            JobState t = _terminal[jobIds[i]];
            if (t != JobState.None && t != s) ghostTerminalChanged = true;
            if (s == JobState.Finalized || s == JobState.Cancelled || s == JobState.Expired || s == JobState.Slashed) {
                _terminal[jobIds[i]] = s;
            }
        }
    }

    // ================================================================ registry actions

    function stake(uint256 actorSeed, uint256 amount) external observe {
        address a = _actor(actorSeed);
        amount = bound(amount, 1, 50 ether);
        vm.prank(a);
        registry.stake{value: amount}();
        ghostIn += amount;
    }

    function requestUnstake(uint256 actorSeed, uint256 amount) external observe {
        address a = _actor(actorSeed);
        uint256 free = registry.freeStake(a);
        if (free == 0) return;
        amount = bound(amount, 1, free);
        vm.prank(a);
        registry.requestUnstake(uint96(amount));
    }

    function withdrawRegistry(uint256 actorSeed) external observe {
        address a = _actor(actorSeed);
        uint256 credit = registry.credits(a);
        WorkerRegistry.StakeInfo memory s = registry.stakeOf(a);
        uint256 expected = credit + (s.unbonding != 0 && block.timestamp >= s.unbondingReadyAt ? s.unbonding : 0);
        if (expected == 0) return;
        uint256 before = a.balance;
        vm.prank(a);
        registry.withdraw();
        assertEq(a.balance - before, expected, "registry payout");
        ghostOut += expected;
        ghostRegistryCreditsWithdrawn += credit;
    }

    /// @dev Anyone but the market calling slash must fail (M6).
    function tryUnauthorizedSlash(uint256 actorSeed, uint256 victimSeed) external observe {
        vm.prank(_actor(actorSeed));
        try registry.slash(_actor(victimSeed), 1, 1, _actor(actorSeed), 0) {
            ghostUnauthorizedSlash = true;
        } catch {}
    }

    // ================================================================ market actions

    function postJob(uint256 actorSeed, uint256 reward, uint256 stake_, uint256 exec, uint256 window, uint256 claimIn)
        external
        observe
    {
        address a = _actor(actorSeed);
        reward = bound(reward, 1, 20 ether);
        JobSpec memory s = JobSpec({
            specCid: "bafyspec",
            programRoot: keccak256(abi.encode("p", jobIds.length)),
            inputsRoot: keccak256(abi.encode("i", jobIds.length)),
            numUnits: 1,
            requiredStake: uint96(bound(stake_, 1, 20 ether)),
            claimDeadline: uint64(block.timestamp + bound(claimIn, 0, 2 days)),
            executionTime: uint32(bound(exec, market.MIN_EXECUTION_TIME(), 1 days)),
            challengeWindow: uint32(bound(window, 1, 1 days)),
            minGpuMemoryMiB: 0,
            disputeBond: 0
        });
        uint256 minBond = (uint256(s.requiredStake) * market.MIN_BOND_BPS() + 9999) / 10_000;
        s.disputeBond = uint96(minBond > market.minDisputeBond() ? minBond : market.minDisputeBond());
        vm.prank(a);
        uint256 id = market.postJob{value: reward}(s);
        jobIds.push(id);
        ghostIn += reward;
    }

    /// @dev A sharded post: 1..4 shards with their own rewards, through postJobs.
    function postJobs(uint256 actorSeed, uint256 n, uint256 reward, uint256 stake_, uint256 claimIn) external observe {
        address a = _actor(actorSeed);
        n = bound(n, 1, 4);
        JobSpec[] memory specs = new JobSpec[](n);
        uint256[] memory rewards = new uint256[](n);
        uint256 total;
        for (uint256 i = 0; i < n; i++) {
            specs[i] = JobSpec({
                specCid: "bafyshard",
                programRoot: keccak256(abi.encode("p", jobIds.length)),
                inputsRoot: keccak256(abi.encode("i", jobIds.length, i)),
                numUnits: 1,
                requiredStake: uint96(bound(stake_ >> i, 1, 20 ether)),
                claimDeadline: uint64(block.timestamp + bound(claimIn, 0, 2 days)),
                executionTime: market.MIN_EXECUTION_TIME(),
                challengeWindow: 1 hours,
                minGpuMemoryMiB: 0,
                disputeBond: 0
            });
            uint256 minBond = (uint256(specs[i].requiredStake) * market.MIN_BOND_BPS() + 9999) / 10_000;
            specs[i].disputeBond = uint96(minBond > market.minDisputeBond() ? minBond : market.minDisputeBond());
            rewards[i] = bound(reward >> i, 1, 5 ether);
            total += rewards[i];
        }
        vm.prank(a);
        uint256 first = market.postJobs{value: total}(specs, rewards);
        for (uint256 i = 0; i < n; i++) {
            jobIds.push(first + i);
        }
        ghostIn += total;
        ghostDone["postJobs"]++;
    }

    function claimJob(uint256 actorSeed, uint256 jobSeed) external observe {
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Open);
        if (!ok) return;
        Job memory j = market.getJob(id);
        address a = _actor(actorSeed);
        if (block.timestamp > j.deadline) return;
        uint256 free = registry.freeStake(a);
        if (free < j.requiredStake) {
            // A worker tops up its stake to take the job (keeps claims frequent in the runs).
            uint256 topUp = j.requiredStake - free;
            vm.prank(a);
            registry.stake{value: topUp}();
            ghostIn += topUp;
        }
        vm.prank(a);
        market.claimJob(id);
        ghostDone["claim"]++;
    }

    function submitResult(uint256 jobSeed, bytes32 root) external observe {
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Claimed);
        if (!ok) return;
        Job memory j = market.getJob(id);
        if (j.state != JobState.Claimed || block.timestamp > j.deadline) return;
        if (root == bytes32(0)) root = keccak256("r");
        vm.prank(j.worker);
        market.submitResult(id, root, "bafyout");
        ghostDone["submit"]++;
    }

    function finalizeJob(uint256 actorSeed, uint256 jobSeed) external observe {
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Submitted);
        if (!ok) return;
        Job memory j = market.getJob(id);
        if (j.state != JobState.Submitted || block.timestamp < j.deadline || j.openDisputes != 0) return;
        vm.prank(_actor(actorSeed));
        market.finalizeJob(id);
        ghostDone["finalize"]++;
    }

    function cancelJob(uint256 jobSeed) external observe {
        if (jobSeed % 4 != 0) return; // rarer than the other moves, so jobs live long enough to settle
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Open);
        if (!ok) return;
        Job memory j = market.getJob(id);
        if (j.state != JobState.Open) return;
        vm.prank(j.poster);
        market.cancelJob(id);
        ghostDone["cancel"]++;
    }

    function expireJob(uint256 actorSeed, uint256 jobSeed) external observe {
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Claimed);
        if (!ok || block.timestamp <= market.getJob(id).deadline) (id, ok) = _jobIn(jobSeed, JobState.Open);
        if (!ok) return;
        Job memory j = market.getJob(id);
        if ((j.state != JobState.Open && j.state != JobState.Claimed) || block.timestamp <= j.deadline) return;
        vm.prank(_actor(actorSeed));
        market.expireJob(id);
        if (j.state == JobState.Claimed) {
            ghostBurned += (uint256(j.requiredStake) + 9) / 10; // EXPIRY_SLASH_BPS = 10%, rounded up, all burned
            ghostSlashCalls++;
            // before the poster's claim deadline the job re-opens; after it, it ends
            JobState want = block.timestamp < j.claimDeadline ? JobState.Open : JobState.Expired;
            if (market.getJob(id).state != want) ghostWrongExpiry = true;
            if (want == JobState.Open) ghostDone["reopen"]++;
        }
        ghostDone["expire"]++;
    }

    function openChallenge(uint256 jobSeed, uint256 challengerSeed) external observe {
        (uint256 id, bool ok) = _jobIn(jobSeed, JobState.Submitted);
        if (!ok) return;
        Job memory j = market.getJob(id);
        if (j.state != JobState.Submitted || block.timestamp >= j.deadline) return;
        uint256 gid = game.open(id);
        _openIds[id].push(gid);
        ghostChallengerOf[gid] = _actor(challengerSeed);
        ghostOpenGames[id]++;
        ghostDone["open"]++;
    }

    /// @dev Ends any open game of a job (not only the latest), so later games often end first.
    function resolveChallenge(uint256 jobSeed, uint256 gameSeed, bool workerLost) external observe {
        (uint256 id, bool ok) = _jobWithGame(jobSeed);
        if (!ok || ghostOpenGames[id] == 0) return;
        Job memory j = market.getJob(id);
        uint256[] storage ids = _openIds[id];
        uint256 k = gameSeed % ids.length;
        uint256 gid = ids[k];
        ids[k] = ids[ids.length - 1];
        ids.pop();
        address challenger = ghostChallengerOf[gid];
        game.resolve(id, gid, challenger, workerLost);
        ghostOpenGames[id]--;
        if (workerLost) {
            if (j.state != JobState.Slashed) {
                ghostFirstLosses++;
                ghostDone["slash"]++;
            }
            if (ghostFirstWonGame[id] == 0 || gid < ghostFirstWonGame[id]) {
                ghostFirstWonGame[id] = gid;
                ghostFirstWinner[id] = challenger;
            }
        }
        if (ghostOpenGames[id] == 0 && market.getJob(id).state == JobState.Slashed) _settled(id, j.requiredStake);
    }

    /// @dev The last game of a Slashed job ended: the whole stake is taken, half (rounded down) to
    ///      the earliest lost game's challenger, the rest burned (M6, M9, M10).
    function _settled(uint256 id, uint256 amount) internal {
        uint256 paid = amount / 2; // SLASH_CHALLENGER_BPS = 50%
        ghostBurned += amount - paid;
        ghostSlashCredits += paid;
        ghostSlashCalls++;
        Job memory after_ = market.getJob(id);
        if (after_.firstWinner != ghostFirstWinner[id] || after_.firstWonGame != ghostFirstWonGame[id]) {
            ghostWrongWinnerPaid = true;
        }
        if ((amount - paid) * 2 < amount) ghostBurnBelowHalf = true;
    }

    function openGameIds(uint256 jobId) external view returns (uint256[] memory) {
        return _openIds[jobId];
    }

    function withdrawMarket(uint256 actorSeed) external observe {
        address a = _actor(actorSeed);
        uint256 credit = market.credits(a);
        if (credit == 0) return;
        uint256 before = a.balance;
        vm.prank(a);
        market.withdraw();
        assertEq(a.balance - before, credit, "market payout");
        ghostOut += credit;
    }

    function warp(uint256 dt) external observe {
        vm.warp(block.timestamp + bound(dt, 1, 12 hours));
    }
}
