// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Job market value types
/// @notice The job lifecycle states and the packed structs the market stores and returns.
/// @dev "Disputed" in the design is `Submitted` with `openDisputes > 0`: a job leaves Submitted only
///      through finalizeJob (no open game, window passed) or a lost game (-> Slashed).

/// @notice Lifecycle of a job. `None` is the zero value of a job id that was never posted.
enum JobState {
    None,
    Open, // posted, reward in escrow, waiting for a worker until claimDeadline
    Claimed, // a worker locked its stake; must submit before `deadline`
    Submitted, // result committed; challengeable until `deadline`
    Finalized, // no dispute after the window: worker paid, stake unlocked
    Cancelled, // poster cancelled before any claim: reward refunded
    Expired, // unclaimed by claimDeadline, or claimed, not submitted by the execution deadline and past claimDeadline
    Slashed // the worker lost a dispute game: poster refunded; stake slashed once every game ended
}

/// @notice What a poster submits with `postJob` (the reward is msg.value).
/// @dev The spec CID and `minGpuMemoryMiB` are not stored: they are only read off-chain, so they
///      live in the JobPosted event only. Everything a later call or the dispute game needs is
///      stored in `Job`; `claimDeadline` is stored as `Job.deadline` while the job is Open.
struct JobSpec {
    string specCid; // IPFS CID of the job spec document (program, weights, inputs CIDs)
    bytes32 programRoot; // docs/protocol.md 1.2
    bytes32 inputsRoot; // docs/protocol.md 1.2
    uint32 numUnits; // leaves of the result root tree
    uint96 requiredStake; // stake the worker locks on claim
    uint64 claimDeadline; // unix time: last second a worker may claim
    uint32 executionTime; // seconds from claim to the submit deadline
    uint32 challengeWindow; // seconds from submit during which a game may open
    uint32 minGpuMemoryMiB; // hardware requirement (advisory: checked by workers, not the chain)
    uint96 disputeBond; // bond a challenger posts per game
}

/// @notice A job as stored: 8 slots, 5 of them written by postJob (gas: docs/protocol.md section 4).
struct Job {
    // slot 0
    address poster;
    uint96 reward;
    // slot 1
    uint96 requiredStake;
    uint96 disputeBond;
    uint32 executionTime;
    uint32 challengeWindow;
    // slot 2
    uint64 deadline; // Open: claim deadline; Claimed: execution deadline; Submitted: challenge deadline
    uint32 numUnits;
    uint32 openDisputes;
    JobState state;
    uint64 claimDeadline; // the poster's claim deadline, kept: a missed execution deadline before it re-opens the job
    // slot 3 (written on claim; firstWonGame on the first lost game)
    address worker;
    uint64 firstWonGame; // lowest id of a game the worker lost (0: none); its challenger is paid
    // slots 4..6
    bytes32 programRoot;
    bytes32 inputsRoot;
    bytes32 resultRoot; // written on submit
    // slot 7 (written when the worker loses a game opened before every game it lost so far)
    address firstWinner; // challenger of firstWonGame: paid SLASH_CHALLENGER_BPS of the stake
}
