// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IDisputeGame
/// @notice Types, errors and events of the bisection dispute game (docs/protocol.md section 5). The
///         worker and watchtower daemons live on these events; every state change emits one.
interface IDisputeGame {
    // ---------------------------------------------------------------- types
    /// @notice Phases in order; a game moves only forward. `Resolved` is final.
    enum Phase {
        None, //          no such game
        UnitDescent, //   dissection of the result root down to one unit output root
        TraceCommit, //   the worker posts the unit's trace root and the program header
        TraceDescent, //  dissection of the trace root down to the first disputed op output
        OpReveal, //      the challenger proves the op descriptor against the ops root
        TensorDescent, // dissection of the op's output tensor tree down to one leaf
        LeafReveal, //    the worker reveals that leaf's bytes
        OneStep, //       the challenger names one element; the verifier recomputes it
        DataRequest, //   a data-availability request: the worker must put one unit's output on-chain
        Resolved
    }

    enum Side {
        Worker,
        Challenger
    }

    /// @notice Games on a job play to their end even after another game slashed it: the earliest
    ///         game the worker lost decides who is paid (docs/protocol.md 4.11).
    enum Outcome {
        Open,
        WorkerWon, //     the challenger's bond goes to the worker (minus the burn; DataServed: a fee)
        ChallengerWon // the worker is slashed by the market; the bond goes back
    }

    /// @notice Why a game ended (GameResolved.reason).
    enum Reason {
        OneStep, //            the verifier's verdict
        Timeout, //            the mover's chess clock ran out
        NonCanonicalPadding, // the worker committed a non-zero padding value
        DataServed //           the worker answered a data request with the unit's output bytes
    }

    /// @notice One game. Descent fields (node, height, index, count) describe the current
    ///         disputed node of whichever tree the phase dissects.
    struct Game {
        // slot 0
        address challenger;
        uint96 bond;
        // slot 1
        address worker;
        Phase phase;
        Side turn;
        Outcome outcome;
        uint8 height; //       levels above the leaves of the current node
        uint32 moveNo; //      moves played; every move names the number it expects
        // slot 2
        uint64 lastMoveAt; //  when the current turn began
        uint64 workerClock; // seconds left when the worker's turn began (or began last)
        uint64 challengerClock;
        uint64 index; //       the current node's index at its height
        // slot 3
        uint64 count; //       real (non-padding) leaves of the tree being dissected
        uint64 outBytes; //    byte length of the disputed op's output (OpReveal on)
        uint32 unitIndex;
        uint32 opIndex;
        uint32 numOps;
        uint32 numWeights;
        // slot 4..
        uint32 numUnits;
        uint256 jobId;
        bytes32 node; //       the worker's value at the current node (a claim, not a fact)
        bytes32 programRoot;
        bytes32 inputsRoot;
        bytes32 traceRoot;
        bytes32 opsRoot;
        bytes32 opLeaf;
    }

    // ---------------------------------------------------------------- errors
    error DisputeGame_UnknownGame(uint256 gameId);
    error DisputeGame_NotMarket(address caller);
    error DisputeGame_BadConfig(uint256 splitBits, uint256 clockSeconds);
    error DisputeGame_WrongBond(uint256 jobId, uint256 sent, uint256 required);
    error DisputeGame_NoResult(uint256 jobId);
    /// @notice The move is for another phase than the game is in.
    error DisputeGame_WrongPhase(uint256 gameId, Phase actual);
    /// @notice `caller` moved while it is `turn`'s turn (or is not a player of the game).
    error DisputeGame_NotYourTurn(uint256 gameId, address caller, Side turn);
    /// @notice A repeated or reordered move: it names `expected` but the game is at `actual`.
    error DisputeGame_StaleMove(uint256 gameId, uint32 expected, uint32 actual);
    /// @notice The mover's clock ran out (`elapsed` > `left`): the move is late; resolve instead.
    error DisputeGame_ClockExpired(uint256 gameId, Side side, uint256 elapsed, uint64 left);
    /// @notice resolveTimeout while the mover still has time.
    error DisputeGame_ClockRunning(uint256 gameId, Side side, uint64 left);
    /// @notice Revealed children have the wrong count or do not hash to the current node.
    error DisputeGame_BadReveal(uint256 gameId, uint256 got, uint256 expected);
    /// @notice The picked child and its path do not rebuild the current node.
    error DisputeGame_BadPick(uint256 gameId, uint256 childIndex);
    /// @notice The picked subtree is padding and the worker's value for it is canonical.
    error DisputeGame_CanonicalPadding(uint256 gameId, uint256 height, uint256 index);
    error DisputeGame_BadProgramHeader(uint256 gameId, uint32 numOps, uint32 numWeights);
    error DisputeGame_BadTraceOutput(uint256 gameId);
    error DisputeGame_BadOpProof(uint256 gameId, uint32 opIndex);
    error DisputeGame_BadOutputSize(uint256 gameId, uint256 outBytes);
    error DisputeGame_BadLeaf(uint256 gameId);
    /// @notice requestData for a unit the job does not have.
    error DisputeGame_BadUnit(uint256 jobId, uint256 unitIndex, uint256 numUnits);
    /// @notice answerData with bytes that are empty, over MAX_UNIT_OUTPUT_BYTES, or not the unit's
    ///         committed output (their tensor root is not at unitIndex of the result root).
    error DisputeGame_BadData(uint256 gameId, uint256 length);
    error DisputeGame_NothingToWithdraw(address account);
    error DisputeGame_TransferFailed(address to, uint256 amount);

    // ---------------------------------------------------------------- events
    event GameOpened(
        uint256 indexed gameId,
        uint256 indexed jobId,
        address indexed challenger,
        address worker,
        uint96 bond,
        uint32 numUnits,
        bytes32 resultRoot
    );
    /// @notice The worker revealed the 2^m descendants of (height, index) in `phase`'s tree.
    event ChildrenRevealed(
        uint256 indexed gameId, uint32 moveNo, Phase phase, uint8 height, uint64 index, bytes32[] children
    );
    /// @notice The challenger disputes `node` at (height, index) of `phase`'s tree.
    event ChildPicked(uint256 indexed gameId, uint32 moveNo, Phase phase, uint8 height, uint64 index, bytes32 node);
    event TraceCommitted(
        uint256 indexed gameId,
        uint32 moveNo,
        uint32 unitIndex,
        bytes32 traceRoot,
        uint32 numOps,
        uint32 numWeights,
        bytes32 opsRoot
    );
    event OpProven(uint256 indexed gameId, uint32 moveNo, uint32 opIndex, uint64 outBytes, bytes descriptor);
    event LeafRevealed(uint256 indexed gameId, uint32 moveNo, uint64 leafIndex, bytes leaf);
    event GameResolved(
        uint256 indexed gameId, uint256 indexed jobId, Outcome outcome, Reason reason, uint256 burned
    );
    /// @notice A data request (game `gameId`, Phase.DataRequest) for unit `unitIndex`'s output.
    event DataRequested(uint256 indexed gameId, uint256 indexed jobId, address indexed requester, uint32 unitIndex);
    /// @notice The worker put unit `unitIndex`'s output bytes on-chain (proven against the result
    ///         root): posters read a withheld output from here (gpumesh job result).
    event DataServed(uint256 indexed gameId, uint256 indexed jobId, uint32 unitIndex, bytes data);
    event Withdrawn(address indexed account, uint256 amount);
}
