// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../src/dispute/DisputeGame.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {Constants} from "../../src/libraries/Constants.sol";
import {LibMerkle} from "../../src/libraries/LibMerkle.sol";
import {DisputeBase} from "./DisputeBase.sol";
import {ToyModel} from "./mocks/ToyModel.sol";

/// @notice Concrete games: who wins, where the corruption is, padding, clocks, reverts, payouts.
contract DisputeGameTest is DisputeBase {
    uint256 internal constant JOB = 7;

    function setUp() public {
        _deploy(1); // k = 1: the deepest games, every level is a round
        // 5 units, 6 ops, tensors up to 3000 bytes (3 leaves + padding leaf)
        model.build(42, 5, 6, 3000);
    }

    function _corruptAndOpen(uint256 u, uint256 t, uint256 pos, bool propagate) internal returns (uint256 gameId) {
        model.corruptTensor(u, t, pos, 0x5a, propagate);
        assertTrue(model.workerResultRoot() != model.honestResultRoot(), "corruption reaches the result");
        _job(JOB);
        gameId = _open(JOB, challenger);
    }

    function _assertChallengerWon(uint256 gameId, IDisputeGame.Reason) internal view {
        assertEq(uint8(_g(gameId).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertTrue(market.isSlashed(JOB));
        assertEq(market.slashedBy(JOB), challenger);
        assertEq(game.credits(challenger), BOND, "bond back");
        assertEq(game.credits(worker), 0);
        assertEq(market.openDisputes(JOB), 0);
    }

    // ------------------------------------------------------------ honest challenger wins

    function test_CorruptFirstOp_WorkerLosesAtOneStep() public {
        uint256 id = _corruptAndOpen(2, 0, 10, true);
        _play(id, 0);
        _assertChallengerWon(id, IDisputeGame.Reason.OneStep);
        assertEq(_g(id).opIndex, 0);
        assertEq(_g(id).unitIndex, 2);
    }

    function test_CorruptMiddleOp_FirstWrongOpIsFound() public {
        uint256 id = _corruptAndOpen(1, 3, 100, true); // op 4 reads bytes 0..153 of op 3
        _play(id, 0);
        _assertChallengerWon(id, IDisputeGame.Reason.OneStep);
        assertEq(_g(id).opIndex, 3, "the first wrong op, not a later one");
    }

    function test_CorruptLastOp_LastElement() public {
        uint256 last = model.outBytes(5) - 1;
        uint256 id = _corruptAndOpen(4, 5, last, false);
        _play(id, 0);
        _assertChallengerWon(id, IDisputeGame.Reason.OneStep);
        assertEq(_g(id).opIndex, 5);
        assertEq(_g(id).index, last / Constants.LEAF_BYTES);
    }

    function test_CorruptWithoutPropagation_StillTheCorruptOp() public {
        // op 5 alone is wrong relative to its own (correct) input
        uint256 id = _corruptAndOpen(0, 5, 0, false);
        _play(id, 0);
        _assertChallengerWon(id, IDisputeGame.Reason.OneStep);
    }

    function test_NonCanonicalPaddingByte_InLastLeaf_Loses() public {
        uint32 ob = model.outBytes(5);
        assertTrue(ob % Constants.LEAF_BYTES != 0, "1309 bytes: a partial last leaf");
        uint256 id = _corruptAndOpen(3, 5, ob + 1, false); // a padding byte of the last data leaf
        _play(id, 0);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertEq(uint8(_g(id).phase), uint8(IDisputeGame.Phase.Resolved));
    }

    function test_NonCanonicalPaddingLeaf_LosesAtThePick() public {
        // A one-op job whose output has 3 data leaves + 1 all-padding leaf.
        uint256 seed = 1;
        while (true) {
            model = new ToyModel();
            model.build(seed, 2, 1, 3000);
            if (LibMerkle.leafCount(model.outBytes(0)) == 3) break;
            ++seed;
        }
        uint256 id = _corruptAndOpen(1, 0, 4 * Constants.LEAF_BYTES - 1, false); // inside leaf 3
        _play(id, 0);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertEq(uint8(_g(id).phase), uint8(IDisputeGame.Phase.Resolved));
        assertTrue(_g(id).index != 3 || _g(id).height != 0, "lost at the pick: never descended into padding");
    }

    function test_NonCanonicalResultPadding_Loses() public {
        assertTrue(model.corruptResultPadding(0, keccak256("junk")), "5 units -> 3 padding slots");
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        _play(id, 0);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
    }

    // ------------------------------------------------------------ honest worker wins

    function test_DishonestChallenger_LosesBond() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        _play(id, 12345);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.WorkerWon));
        assertFalse(market.isSlashed(JOB));
        uint256 burn = (uint256(BOND) * Constants.BOND_BURN_BPS) / 10_000;
        assertEq(game.credits(worker), BOND - burn);
        assertEq(game.burned(), burn);
        assertEq(game.credits(challenger), 0);
        assertEq(address(game).balance, BOND);
        vm.prank(worker);
        game.withdraw();
        assertEq(worker.balance, BOND - burn);
        assertEq(address(game).balance, burn, "the burned part stays locked");
    }

    function testFuzz_DishonestChallenger_AlwaysLoses(uint256 rnd) public {
        rnd = bound(rnd, 1, type(uint256).max);
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        _play(id, rnd);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.WorkerWon));
    }

    function test_RevertWhen_PickingCanonicalPadding() public {
        // Honest worker, challenger walks to the trace descent and tries the padding slots.
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        while (_g(id).phase != IDisputeGame.Phase.TraceDescent || _g(id).turn != IDisputeGame.Side.Challenger) {
            (address who, bytes memory data) = _next(id, 1);
            (bool ok,) = _send(who, data);
            assertTrue(ok);
        }
        // numOps = 6 -> 8 slots; at k=1 the first pick is at height 2: child 1 covers slots 4..7,
        // not padding; walk right until the children are slots 6 and 7, then pick 7.
        bytes32[] memory tr = model.traceLeaves(true, _g(id).unitIndex);
        IDisputeGame.Game memory g = _g(id);
        bytes32[] memory path = new bytes32[](1);
        path[0] = model.nodeAt(tr, 2, 0);
        bytes32 child = model.nodeAt(tr, 2, 1);
        vm.prank(challenger);
        game.pick(id, g.moveNo, 1, child, path);
        bytes memory mv = model.workerMove(game, id);
        vm.prank(worker);
        (bool ok2,) = address(game).call(mv);
        assertTrue(ok2);
        g = _g(id);
        path[0] = model.nodeAt(tr, 1, 2);
        child = model.nodeAt(tr, 1, 3);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_CanonicalPadding.selector, id, 1, 3));
        game.pick(id, g.moveNo, 1, child, path);
    }

    // ------------------------------------------------------------ clocks

    function test_WorkerTimeout_WorkerLoses() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.DisputeGame_ClockRunning.selector, id, IDisputeGame.Side.Worker, CLOCK)
        );
        game.resolveTimeout(id);
        vm.warp(block.timestamp + CLOCK + 1);
        (address who, bytes memory data) = _next(id, 0);
        (bool ok, bytes memory ret) = _send(who, data);
        assertFalse(ok, "a late move never lands");
        assertEq(bytes4(ret), IDisputeGame.DisputeGame_ClockExpired.selector);
        vm.prank(makeAddr("anyone"));
        game.resolveTimeout(id);
        _assertChallengerWon(id, IDisputeGame.Reason.Timeout);
    }

    function test_ChallengerTimeout_ChallengerLoses_ClocksAreChess() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        vm.warp(block.timestamp + CLOCK - 10); // the worker uses almost all its time
        (address who, bytes memory data) = _next(id, 0);
        (bool ok,) = _send(who, data);
        assertTrue(ok);
        assertEq(_g(id).workerClock, 10);
        vm.warp(block.timestamp + CLOCK); // exactly the budget: still in time
        (who, data) = _next(id, 1);
        (ok,) = _send(who, data);
        assertTrue(ok);
        assertEq(_g(id).challengerClock, 0);
        vm.warp(block.timestamp + 11); // the worker ran out of its remaining 10 s
        game.resolveTimeout(id);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
    }

    function test_ChallengerStalls_WorkerWins() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        (address who, bytes memory data) = _next(id, 0);
        _send(who, data);
        vm.warp(block.timestamp + CLOCK + 1);
        game.resolveTimeout(id);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.WorkerWon));
        assertGt(game.credits(worker), 0);
    }

    // ------------------------------------------------------------ idempotence and access

    function test_RevertWhen_MoveRepeated() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        (address who, bytes memory data) = _next(id, 0);
        (bool ok,) = _send(who, data);
        assertTrue(ok);
        (ok,) = _send(who, data); // the worker's reveal again
        assertFalse(ok);
        (address c, bytes memory pickData) = _next(id, 0);
        (ok,) = _send(c, pickData);
        assertTrue(ok);
        (ok,) = _send(who, data); // the old reveal, now stale
        assertFalse(ok);
        vm.prank(who);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_StaleMove.selector, id, 0, 2));
        game.reveal(id, 0, new bytes32[](2));
        (ok,) = _send(c, pickData); // a repeated pick: not the challenger's turn
        assertFalse(ok);
    }

    function test_RevertWhen_NotThePlayer() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        (, bytes memory data) = _next(id, 0);
        (bool ok, bytes memory ret) = _send(challenger, data);
        assertFalse(ok);
        assertEq(bytes4(ret), IDisputeGame.DisputeGame_NotYourTurn.selector);
        (ok,) = _send(makeAddr("stranger"), data);
        assertFalse(ok);
    }

    function test_RevertWhen_RevealDoesNotHashToNode() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        bytes32[] memory kids = new bytes32[](2);
        kids[0] = keccak256("a");
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadReveal.selector, id, 2, 2));
        game.reveal(id, 0, kids);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadReveal.selector, id, 4, 2));
        game.reveal(id, 0, new bytes32[](4));
    }

    function test_RevertWhen_PickWithWrongPath() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        (address w, bytes memory data) = _next(id, 0);
        _send(w, data);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadPick.selector, id, 0));
        game.pick(id, 1, 0, keccak256("x"), new bytes32[](1));
    }

    function test_RevertWhen_TraceDoesNotEndInUnitRoot() public {
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        while (_g(id).phase != IDisputeGame.Phase.TraceCommit) {
            (address who, bytes memory data) = _next(id, 3);
            _send(who, data);
        }
        IDisputeGame.Game memory g = _g(id);
        bytes32[] memory tr = model.traceLeaves(true, (g.unitIndex + 1) % 5); // another unit's trace
        bytes32[] memory path = model.pathOf(tr, 5);
        bytes32 root = model.rootOf(tr);
        bytes32 opsRoot = model.opsRoot();
        vm.startPrank(worker);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadTraceOutput.selector, id));
        game.commitTrace(id, g.moveNo, root, 6, 0, opsRoot, path);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadProgramHeader.selector, id, 7, 0));
        game.commitTrace(id, g.moveNo, root, 7, 0, opsRoot, path);
        vm.stopPrank();
    }

    // ------------------------------------------------------------ opening and closing

    function test_RevertWhen_WrongBond() public {
        _job(JOB);
        vm.deal(challenger, 2 ether);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_WrongBond.selector, JOB, 1, BOND));
        game.challenge{value: 1}(JOB);
    }

    function test_RevertWhen_WindowClosed() public {
        _job(JOB);
        vm.warp(block.timestamp + 1 days);
        vm.deal(challenger, BOND);
        vm.prank(challenger);
        vm.expectRevert();
        game.challenge{value: BOND}(JOB);
    }

    function test_Opening_EmitsAndFreezesTheJob() public {
        _job(JOB);
        vm.deal(challenger, BOND);
        vm.expectEmit(true, true, true, true, address(game));
        emit IDisputeGame.GameOpened(1, JOB, challenger, worker, BOND, 5, model.workerResultRoot());
        vm.prank(challenger);
        game.challenge{value: BOND}(JOB);
        assertEq(market.openDisputes(JOB), 1);
        IDisputeGame.Game memory g = _g(1);
        assertEq(uint8(g.phase), uint8(IDisputeGame.Phase.UnitDescent));
        assertEq(g.height, 3);
        assertEq(g.count, 5);
        assertEq(g.node, model.workerResultRoot());
    }

    /// A puppet's game opened after the honest one and lost first does not take the slash: games
    /// play on after the job is Slashed, and the earliest game the worker lost is the one paid.
    function test_LaterGameLostFirst_EarliestLostGameIsPaid() public {
        model.corruptTensor(0, 0, 0, 1, true);
        _job(JOB);
        uint256 a = _open(JOB, challenger);
        address puppet = makeAddr("puppet");
        uint256 b = _open(JOB, puppet);
        assertEq(market.openDisputes(JOB), 2);
        _play(b, 0);
        assertTrue(market.isSlashed(JOB));
        assertEq(market.slashedBy(JOB), puppet, "only game lost so far");
        assertEq(uint8(_g(a).phase), uint8(IDisputeGame.Phase.UnitDescent), "the earlier game plays on");
        _play(a, 0);
        assertEq(uint8(_g(a).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertEq(market.slashedBy(JOB), challenger, "the earliest lost game is paid");
        assertEq(game.credits(challenger), BOND);
        assertEq(game.credits(puppet), BOND);
        assertEq(market.openDisputes(JOB), 0);
        assertEq(market.slashCount(), 1, "one slash per job");
    }

    function test_RevertWhen_BadConfig() public {
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadConfig.selector, 0, CLOCK));
        new DisputeGame(IJobMarket(address(market)), stepper, 0, CLOCK);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadConfig.selector, 4, 0));
        new DisputeGame(IJobMarket(address(market)), stepper, 4, 0);
    }

    function test_RevertWhen_NothingToWithdraw() public {
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_NothingToWithdraw.selector, address(this)));
        game.withdraw();
    }
}
