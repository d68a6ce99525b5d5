// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IJobMarket} from "../interfaces/IJobMarket.sol";
import {Constants} from "../libraries/Constants.sol";
import {LibDissection} from "../libraries/LibDissection.sol";
import {LibMerkle} from "../libraries/LibMerkle.sol";
import {IDisputeGame} from "./IDisputeGame.sol";
import {IOneStepVerifier} from "./IOneStepVerifier.sol";

/// @title DisputeGame
/// @notice The bisection fraud proof of docs/protocol.md section 5: one challenger against the worker of
///         a Submitted job, refereed down to one element of one op, which `verifier` recomputes.
///         Unit descent (result root) -> trace commitment -> trace descent (first disputed op) ->
///         op proof -> tensor descent (that op's output) -> leaf reveal -> one-step.
/// @dev The game holds the bonds and pays them out with pull payments. Every length it uses comes
///      from the job (numUnits) or from data proven against the program root (numOps, numWeights,
///      the op descriptor): never from a player's say-so.
contract DisputeGame is IDisputeGame {
    /// @notice The job market whose jobs are disputed (the only caller-trusted contract).
    IJobMarket public immutable market;
    /// @notice The one-step referee.
    IOneStepVerifier public immutable verifier;
    /// @notice k: each reveal shows 2^k descendants (fewer near the leaves).
    uint256 public immutable splitBits;
    /// @notice Chess-clock budget per side, in seconds.
    uint64 public immutable clockSeconds;

    uint256 public gameCount;
    /// @notice Total bond value burned (stays locked in this contract forever).
    uint256 public burned;
    /// @notice Pull-payment balances (bonds won or refunded).
    mapping(address account => uint256) public credits;
    mapping(uint256 gameId => Stored) internal _games;

    /// @dev Placeholder of traceRoot (until commitTrace) and opLeaf (until proveOp); never read as
    ///      a value: getGame shows 0 until the move that fills the slot.
    bytes32 private constant _UNSET = bytes32(uint256(1));

    /// @dev Storage form of a game: the ABI struct `Game` (IDisputeGame) packed into 4 slots of
    ///      scalars + 6 roots, which `getGame` expands. Gas (docs/protocol.md 5.6): writing a fresh
    ///      slot costs 22.1k, overwriting one 2.9k (+2.1k cold), so `challenge` (the opener, who
    ///      chose to start the game) allocates every slot, traceRoot and opLeaf with the
    ///      placeholder _UNSET, and no later move allocates any: each move only overwrites.
    ///      `root` holds the job's programRoot until commitTrace and the proven opsRoot after it
    ///      (numOps != 0): the program root is then rebuilt from the header, which commitTrace
    ///      checked against it, so it never needs a slot of its own.
    struct Stored {
        // slot 0
        address challenger;
        uint96 bond;
        // slot 1
        address worker;
        Phase phase;
        Side turn;
        Outcome outcome;
        uint8 height;
        uint32 moveNo;
        uint32 numUnits;
        // slot 2
        uint64 lastMoveAt;
        uint64 workerClock;
        uint64 challengerClock;
        uint64 index;
        // slot 3
        uint64 count;
        uint64 outBytes;
        uint32 unitIndex;
        uint32 opIndex;
        uint32 numOps;
        uint32 numWeights;
        // slots 4..9
        uint256 jobId;
        bytes32 node;
        bytes32 root; // programRoot (numOps == 0), else opsRoot
        bytes32 inputsRoot;
        bytes32 traceRoot;
        bytes32 opLeaf;
    }

    constructor(IJobMarket market_, IOneStepVerifier verifier_, uint256 splitBits_, uint64 clockSeconds_) {
        if (splitBits_ == 0 || splitBits_ > 8 || clockSeconds_ == 0) {
            revert DisputeGame_BadConfig(splitBits_, clockSeconds_);
        }
        market = market_;
        verifier = verifier_;
        splitBits = splitBits_;
        clockSeconds = clockSeconds_;
    }

    // ================================================================ opening

    /// @notice Open a game against the worker of Submitted job `jobId`; msg.value must equal the
    ///         job's dispute bond. The market refuses once the challenge window closed.
    /// @return gameId the new game (from 1). The worker moves first.
    function challenge(uint256 jobId) external payable returns (uint256 gameId) {
        Stored storage g;
        bytes32 resultRoot;
        (gameId, g, resultRoot) = _open(jobId);
        // The challenger disputes the whole result root.
        _startDescent(g, Phase.UnitDescent, resultRoot, g.numUnits);
        // SAFETY: the market checks Submitted and the window, and freezes finalization; it is
        // trusted (immutable) and called after this game's state is written.
        market.onChallengeOpened(jobId);
    }

    /// @notice Data-availability request: require the worker of Submitted job `jobId` to put unit
    ///         `unitIndex`'s output bytes on-chain (answerData) before its chess clock runs out,
    ///         or be slashed as if it lost a game. msg.value must equal the job's dispute bond; an
    ///         answer pays DATA_FEE_BPS of it to the worker and the rest back. Opens under the
    ///         same rules as a game (window, freezes finalization, counts for the slash order).
    function requestData(uint256 jobId, uint32 unitIndex) external payable returns (uint256 gameId) {
        Stored storage g;
        bytes32 resultRoot;
        (gameId, g, resultRoot) = _open(jobId);
        if (unitIndex >= g.numUnits) revert DisputeGame_BadUnit(jobId, unitIndex, g.numUnits);
        g.phase = Phase.DataRequest;
        g.node = resultRoot;
        g.count = g.numUnits;
        g.unitIndex = unitIndex;
        emit DataRequested(gameId, jobId, msg.sender, unitIndex);
        // SAFETY: as in challenge.
        market.onChallengeOpened(jobId);
    }

    /// @notice Worker: answer data request `gameId` with the unit's output bytes (its canonical
    ///         encoding, at most MAX_UNIT_OUTPUT_BYTES) and the inclusion path of their tensor root
    ///         at unitIndex of the result root (depth from numUnits). Ends the request.
    function answerData(uint256 gameId, uint32 moveNo, bytes calldata data, bytes32[] calldata unitPath) external {
        Stored storage g = _begin(gameId, moveNo, Side.Worker);
        if (g.phase != Phase.DataRequest) revert DisputeGame_WrongPhase(gameId, g.phase);
        // INVARIANT: the bytes served are the ones the result root commits to at this unit (up to
        // zero bytes past the output's end, which the canonical encoding pads with anyway).
        if (
            data.length == 0 || data.length > Constants.MAX_UNIT_OUTPUT_BYTES
                || unitPath.length != LibMerkle.depthFor(g.numUnits)
                || !LibMerkle.verifyInclusion(g.node, LibMerkle.tensorRoot(data), g.unitIndex, unitPath)
        ) revert DisputeGame_BadData(gameId, data.length);
        emit DataServed(gameId, g.jobId, g.unitIndex, data);
        _resolve(g, gameId, false, Reason.DataServed);
    }

    /// @dev Common opening of a game or a data request: bond, result, a fresh game whose worker
    ///      moves first; the caller sets the phase and then tells the market.
    function _open(uint256 jobId) internal returns (uint256 gameId, Stored storage g, bytes32 resultRoot) {
        IJobMarket.DisputeContext memory ctx = market.disputeContext(jobId);
        if (msg.value != ctx.bond || msg.value == 0) revert DisputeGame_WrongBond(jobId, msg.value, ctx.bond);
        if (ctx.resultRoot == bytes32(0) || ctx.numUnits == 0) revert DisputeGame_NoResult(jobId);
        resultRoot = ctx.resultRoot;
        gameId = ++gameCount;
        g = _games[gameId];
        g.challenger = msg.sender;
        g.bond = uint96(msg.value);
        g.worker = ctx.worker;
        g.turn = Side.Worker;
        g.lastMoveAt = uint64(block.timestamp);
        g.workerClock = clockSeconds;
        g.challengerClock = clockSeconds;
        g.jobId = jobId;
        g.numUnits = ctx.numUnits;
        g.root = ctx.programRoot;
        g.inputsRoot = ctx.inputsRoot;
        g.traceRoot = _UNSET;
        g.opLeaf = _UNSET;
        emit GameOpened(gameId, jobId, msg.sender, ctx.worker, uint96(msg.value), ctx.numUnits, ctx.resultRoot);
    }

    // ================================================================ dissection moves

    /// @notice Worker: reveal the 2^m descendants, m = min(k, height), of the disputed node.
    /// @param moveNo the game's current move number (a repeated move reverts as stale).
    function reveal(uint256 gameId, uint32 moveNo, bytes32[] calldata children) external {
        Stored storage g = _begin(gameId, moveNo, Side.Worker);
        _requireDescent(g, gameId);
        uint256 m = LibDissection.stepBits(g.height, splitBits);
        uint256 want = uint256(1) << m;
        if (children.length != want) revert DisputeGame_BadReveal(gameId, children.length, want);
        // INVARIANT: revealed children hash to the worker's own claim at this node, so the
        // challenger's pick below is a claim the worker is bound to.
        if (LibDissection.foldChildren(children) != g.node) revert DisputeGame_BadReveal(gameId, want, want);
        g.turn = Side.Challenger;
        emit ChildrenRevealed(gameId, moveNo, g.phase, g.height, g.index, children);
    }

    /// @notice Challenger: dispute revealed child `c` (value `child`, with its path of m siblings
    ///         up to the current node, bottom first). An honest challenger in the trace descent
    ///         picks the FIRST child that differs from its own trace.
    /// @dev Picking an all-padding child: non-canonical -> the worker loses at once; canonical ->
    ///      reverts (there is nothing to dispute).
    function pick(uint256 gameId, uint32 moveNo, uint256 c, bytes32 child, bytes32[] calldata path) external {
        Stored storage g = _begin(gameId, moveNo, Side.Challenger);
        _requireDescent(g, gameId);
        uint256 m = LibDissection.stepBits(g.height, splitBits);
        if (path.length != m || c >> m != 0 || LibMerkle.rootFromPath(child, c, path) != g.node) {
            revert DisputeGame_BadPick(gameId, c);
        }
        uint256 height = g.height - m;
        uint256 index = LibDissection.childIndex(g.index, m, c);
        if (LibDissection.isPadding(height, index, g.count)) {
            LibDissection.TreeKind kind =
                g.phase == Phase.TensorDescent ? LibDissection.TreeKind.Tensor : LibDissection.TreeKind.Roots;
            // INVARIANT: padding is canonical; a worker that committed anything else loses.
            if (child != LibDissection.paddingValue(kind, height)) {
                _resolve(g, gameId, true, Reason.NonCanonicalPadding);
                return;
            }
            revert DisputeGame_CanonicalPadding(gameId, height, index);
        }
        g.node = child;
        g.height = uint8(height);
        g.index = uint64(index);
        emit ChildPicked(gameId, moveNo, g.phase, uint8(height), uint64(index), child);
        if (height != 0) {
            g.turn = Side.Worker;
        } else {
            _reachedLeaf(g, index);
        }
    }

    // ================================================================ phase transitions

    /// @notice Worker: commit the disputed unit's trace. `traceRoot` is the roots tree over the
    ///         tensor roots of every op output (program order); its last slot must equal the
    ///         disputed unit output root, and the header (numOps, numWeights, opsRoot) must
    ///         rebuild the job's program root.
    /// @param outputPath the inclusion path of slot numOps-1 in traceRoot (depth from numOps).
    function commitTrace(
        uint256 gameId,
        uint32 moveNo,
        bytes32 traceRoot,
        uint32 numOps,
        uint32 numWeights,
        bytes32 opsRoot,
        bytes32[] calldata outputPath
    ) external {
        Stored storage g = _begin(gameId, moveNo, Side.Worker);
        if (g.phase != Phase.TraceCommit) revert DisputeGame_WrongPhase(gameId, g.phase);
        // INVARIANT: numOps is the program's, proven against the job's program root.
        if (
            numOps == 0 || LibMerkle.depthFor(numOps) > Constants.MAX_DEPTH
                || LibMerkle.programRoot(Constants.PROGRAM_VERSION, numOps, numWeights, opsRoot) != g.root
        ) revert DisputeGame_BadProgramHeader(gameId, numOps, numWeights);
        // INVARIANT: the trace ends in the unit output root that the unit descent agreed on.
        if (
            outputPath.length != LibMerkle.depthFor(numOps)
                || !LibMerkle.verifyInclusion(traceRoot, g.node, numOps - 1, outputPath)
        ) revert DisputeGame_BadTraceOutput(gameId);
        g.traceRoot = traceRoot;
        // The program root is rebuilt from (numOps, numWeights, opsRoot) from now on (_programRoot).
        g.root = opsRoot;
        g.numOps = numOps;
        g.numWeights = numWeights;
        emit TraceCommitted(gameId, moveNo, g.unitIndex, traceRoot, numOps, numWeights, opsRoot);
        _startDescent(g, Phase.TraceDescent, traceRoot, numOps);
    }

    /// @notice Challenger: prove op `opIndex`'s descriptor against the ops root; the verifier
    ///         tells its output size, which fixes the output tensor tree the descent runs in.
    function proveOp(uint256 gameId, uint32 moveNo, bytes calldata descriptor, bytes32[] calldata opPath) external {
        Stored storage g = _begin(gameId, moveNo, Side.Challenger);
        if (g.phase != Phase.OpReveal) revert DisputeGame_WrongPhase(gameId, g.phase);
        bytes32 leaf = LibMerkle.opLeaf(descriptor);
        if (
            opPath.length != LibMerkle.depthFor(g.numOps)
                || !LibMerkle.verifyInclusion(g.root, leaf, g.opIndex, opPath)
        ) revert DisputeGame_BadOpProof(gameId, g.opIndex);
        uint256 outBytes = verifier.outputBytes(descriptor);
        if (outBytes == 0 || LibMerkle.tensorDepth(outBytes) > Constants.MAX_DEPTH) {
            revert DisputeGame_BadOutputSize(gameId, outBytes);
        }
        g.opLeaf = leaf;
        g.outBytes = uint64(outBytes);
        emit OpProven(gameId, moveNo, g.opIndex, uint64(outBytes), descriptor);
        // g.node (slot opIndex of the worker's trace) is the root of the disputed output tensor.
        _descendFromNode(g, Phase.TensorDescent, LibMerkle.leafCount(outBytes));
    }

    /// @notice Worker: reveal the LEAF_BYTES bytes of the disputed output leaf. Non-zero bytes
    ///         beyond the tensor's data (canonical padding) lose the game at once.
    function revealLeaf(uint256 gameId, uint32 moveNo, bytes calldata leaf) external {
        Stored storage g = _begin(gameId, moveNo, Side.Worker);
        if (g.phase != Phase.LeafReveal) revert DisputeGame_WrongPhase(gameId, g.phase);
        if (leaf.length != Constants.LEAF_BYTES || LibMerkle.leafHash(leaf) != g.node) {
            revert DisputeGame_BadLeaf(gameId);
        }
        emit LeafRevealed(gameId, moveNo, g.index, leaf);
        if (!_zeroFrom(leaf, LibDissection.dataBytesInLeaf(g.outBytes, g.index))) {
            _resolve(g, gameId, true, Reason.NonCanonicalPadding);
            return;
        }
        g.phase = Phase.OneStep;
        g.turn = Side.Challenger;
    }

    /// @notice Challenger: name output element `elementIndex` (inside the revealed leaf) and hand
    ///         the verifier the input ranges it needs. The verifier's verdict ends the game.
    /// @param descriptor the op descriptor proven in proveOp (checked against its op leaf again)
    /// @param leaf the bytes revealed by the worker (checked against the leaf hash again)
    function step(
        uint256 gameId,
        uint32 moveNo,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external {
        Stored storage g = _begin(gameId, moveNo, Side.Challenger);
        if (g.phase != Phase.OneStep) revert DisputeGame_WrongPhase(gameId, g.phase);
        if (LibMerkle.opLeaf(descriptor) != g.opLeaf) revert DisputeGame_BadOpProof(gameId, g.opIndex);
        if (leaf.length != Constants.LEAF_BYTES || LibMerkle.leafHash(leaf) != g.node) {
            revert DisputeGame_BadLeaf(gameId);
        }
        IOneStepVerifier.OneStepContext memory ctx = IOneStepVerifier.OneStepContext({
            programRoot: _programRoot(g),
            inputsRoot: g.inputsRoot,
            traceRoot: g.traceRoot,
            unitIndex: g.unitIndex,
            numUnits: g.numUnits,
            opIndex: g.opIndex,
            numOps: g.numOps,
            numWeights: g.numWeights,
            leafIndex: g.index
        });
        // SAFETY: the verifier reverts on invalid proofs (the challenger's fault: its clock runs);
        // only a completed recomputation decides the game.
        bool workerCorrect = verifier.verify(ctx, descriptor, elementIndex, leaf, proofs);
        _resolve(g, gameId, !workerCorrect, Reason.OneStep);
    }

    // ================================================================ ending

    /// @notice Anyone: end a game whose mover's chess clock ran out; the mover loses.
    function resolveTimeout(uint256 gameId) external {
        Stored storage g = _active(gameId);
        Side side = g.turn;
        (uint64 left, bool expired) =
            LibDissection.clockLeft(side == Side.Worker ? g.workerClock : g.challengerClock, g.lastMoveAt, block.timestamp);
        if (!expired) revert DisputeGame_ClockRunning(gameId, side, left);
        _resolve(g, gameId, side == Side.Worker, Reason.Timeout);
    }

    /// @notice Pay out the caller's credits.
    function withdraw() external returns (uint256 amount) {
        amount = credits[msg.sender];
        if (amount == 0) revert DisputeGame_NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert DisputeGame_TransferFailed(msg.sender, amount);
    }

    // ================================================================ views

    /// @notice The whole state of game `gameId` (phase None if it does not exist).
    function getGame(uint256 gameId) external view returns (Game memory v) {
        Stored storage g = _games[gameId];
        v.challenger = g.challenger;
        v.bond = g.bond;
        v.worker = g.worker;
        v.phase = g.phase;
        v.turn = g.turn;
        v.outcome = g.outcome;
        v.height = g.height;
        v.moveNo = g.moveNo;
        v.lastMoveAt = g.lastMoveAt;
        v.workerClock = g.workerClock;
        v.challengerClock = g.challengerClock;
        v.index = g.index;
        v.count = g.count;
        v.outBytes = g.outBytes;
        v.unitIndex = g.unitIndex;
        v.opIndex = g.opIndex;
        v.numOps = g.numOps;
        v.numWeights = g.numWeights;
        v.numUnits = g.numUnits;
        v.jobId = g.jobId;
        v.node = g.node;
        v.programRoot = _programRoot(g);
        v.inputsRoot = g.inputsRoot;
        v.traceRoot = g.numOps == 0 ? bytes32(0) : g.traceRoot; // numOps > 0 once the trace is committed
        v.opsRoot = g.numOps == 0 ? bytes32(0) : g.root;
        v.opLeaf = g.outBytes == 0 ? bytes32(0) : g.opLeaf; // outBytes > 0 once the op is proven
    }

    /// @notice Whose turn it is and how many seconds that side has left now.
    function clockNow(uint256 gameId) external view returns (Side turn, uint64 left, bool expired) {
        Stored storage g = _games[gameId];
        turn = g.turn;
        (left, expired) =
            LibDissection.clockLeft(turn == Side.Worker ? g.workerClock : g.challengerClock, g.lastMoveAt, block.timestamp);
    }

    // ================================================================ internals

    /// @dev The job's program root: stored until commitTrace, rebuilt from the proven header after.
    function _programRoot(Stored storage g) internal view returns (bytes32) {
        uint32 numOps = g.numOps;
        if (numOps == 0) return g.root;
        return LibMerkle.programRoot(Constants.PROGRAM_VERSION, numOps, g.numWeights, g.root);
    }

    function _active(uint256 gameId) internal view returns (Stored storage g) {
        g = _games[gameId];
        if (g.phase == Phase.None) revert DisputeGame_UnknownGame(gameId);
        if (g.phase == Phase.Resolved) revert DisputeGame_WrongPhase(gameId, Phase.Resolved);
    }

    /// @dev Common prologue of every move: the game is live, it is `side`'s turn, the sender is
    ///      that player, the move number matches (idempotence), and the clock has not run out.
    ///      Charges the elapsed time to the mover and starts the next turn's clock now.
    function _begin(uint256 gameId, uint32 moveNo, Side side) internal returns (Stored storage g) {
        g = _active(gameId);
        address player = side == Side.Worker ? g.worker : g.challenger;
        if (g.turn != side || msg.sender != player) revert DisputeGame_NotYourTurn(gameId, msg.sender, g.turn);
        if (moveNo != g.moveNo) revert DisputeGame_StaleMove(gameId, moveNo, g.moveNo);
        uint64 before = side == Side.Worker ? g.workerClock : g.challengerClock;
        (uint64 left, bool expired) = LibDissection.clockLeft(before, g.lastMoveAt, block.timestamp);
        // INVARIANT: a clock only ever decreases, and a move after it ran out never lands.
        if (expired) revert DisputeGame_ClockExpired(gameId, side, block.timestamp - g.lastMoveAt, before);
        if (side == Side.Worker) g.workerClock = left;
        else g.challengerClock = left;
        g.lastMoveAt = uint64(block.timestamp);
        g.moveNo = moveNo + 1;
    }

    /// @dev True iff bytes [from, LEAF_BYTES) of `leaf` (LEAF_BYTES long) are all zero. Reads 32
    ///      bytes at a time (~1k gas for a whole leaf instead of ~60k byte by byte); the bytes of the
    ///      first word before `from` are shifted out.
    function _zeroFrom(bytes calldata leaf, uint256 from) internal pure returns (bool zero) {
        uint256 acc = 0;
        uint256 i = from & ~uint256(31);
        if (i < from) {
            acc = uint256(bytes32(leaf[i:i + 32])) << (8 * (from - i));
            i += 32;
        }
        for (; i < Constants.LEAF_BYTES; i += 32) {
            acc |= uint256(bytes32(leaf[i:i + 32]));
        }
        zero = acc == 0;
    }

    function _requireDescent(Stored storage g, uint256 gameId) internal view {
        Phase p = g.phase;
        if (p != Phase.UnitDescent && p != Phase.TraceDescent && p != Phase.TensorDescent) {
            revert DisputeGame_WrongPhase(gameId, p);
        }
    }

    /// @dev Start dissecting the tree with root `root` over `count` real leaves. A tree of one
    ///      leaf skips straight to what follows its descent. The worker moves next.
    function _startDescent(Stored storage g, Phase phase, bytes32 root, uint256 count) internal {
        g.node = root;
        _descendFromNode(g, phase, count);
    }

    /// @dev _startDescent over the tree whose root is already g.node.
    function _descendFromNode(Stored storage g, Phase phase, uint256 count) internal {
        g.phase = phase;
        g.count = uint64(count);
        g.index = 0;
        uint256 depth = LibMerkle.depthFor(count);
        g.height = uint8(depth);
        g.turn = Side.Worker;
        if (depth == 0) _reachedLeaf(g, 0);
    }

    /// @dev The descent of g.phase reached leaf `index` (g.node is the worker's value there).
    function _reachedLeaf(Stored storage g, uint256 index) internal {
        Phase p = g.phase;
        if (p == Phase.UnitDescent) {
            g.unitIndex = uint32(index);
            g.phase = Phase.TraceCommit;
            g.turn = Side.Worker;
        } else if (p == Phase.TraceDescent) {
            // Every slot before `index` is agreed (an honest challenger picked the first
            // difference); slot `index` is the disputed op's output root.
            g.opIndex = uint32(index);
            g.phase = Phase.OpReveal;
            g.turn = Side.Challenger;
        } else {
            g.phase = Phase.LeafReveal;
            g.turn = Side.Worker;
        }
    }

    /// @dev End the game and settle the bond. Every game plays to its end, also on a job another
    ///      game slashed already: the market pays the slash to the earliest game the worker lost.
    ///      A lost challenge burns BOND_BURN_BPS of the bond (rounded up: never zero) and pays the
    ///      rest to the worker; an answered data request pays DATA_FEE_BPS (rounded up) to the
    ///      worker and returns the rest; a won challenge returns the whole bond.
    function _resolve(Stored storage g, uint256 gameId, bool workerLost, Reason reason) internal {
        uint256 jobId = g.jobId;
        g.phase = Phase.Resolved;
        uint256 bond = g.bond;
        uint256 burn = 0;
        Outcome outcome;
        if (workerLost) {
            outcome = Outcome.ChallengerWon;
            credits[g.challenger] += bond;
        } else if (reason == Reason.DataServed) {
            outcome = Outcome.WorkerWon;
            uint256 fee = Constants.bpsUp(bond, Constants.DATA_FEE_BPS);
            credits[g.worker] += fee;
            if (bond != fee) credits[g.challenger] += bond - fee;
        } else {
            outcome = Outcome.WorkerWon;
            burn = Constants.bpsUp(bond, Constants.BOND_BURN_BPS);
            burned += burn;
            if (bond != burn) credits[g.worker] += bond - burn;
        }
        g.outcome = outcome;
        emit GameResolved(gameId, jobId, outcome, reason, burn);
        // SAFETY: state is final before the call; the market slashes only on a ChallengerWon.
        market.onChallengeResolved(jobId, gameId, g.challenger, workerLost);
    }
}
