// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, console2} from "forge-std/Test.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../src/dispute/DisputeGame.sol";
import {JobSpec, JobState} from "../../src/types/JobTypes.sol";
import {ToyModel} from "../dispute/mocks/ToyModel.sol";
import {ToyStepper} from "../dispute/mocks/ToyStepper.sol";

/// @notice The attacks of issue #12 played against the REAL JobMarket, WorkerRegistry and
///         DisputeGame (ToyStepper as the one-step, a ToyModel job), with every actor's value
///         (wallet + stake + every credit) before and after. docs/protocol.md 4.11 tabulates them.
contract AttacksTest is Test {
    uint96 internal constant REWARD = 1 ether;
    uint96 internal constant STAKE = 10 ether;
    uint96 internal constant BOND = 0.5 ether; // 5% of STAKE: the floor
    uint96 internal constant MIN_BOND = 0.01 ether;
    uint64 internal constant CLOCK = 1 days;
    uint32 internal constant EXEC = 1 hours;
    uint32 internal constant WINDOW = 1 days;
    /// Gas price the honest watchtower's profit is judged at (docs/protocol.md 4.11).
    uint256 internal constant GAS_PRICE = 20 gwei;

    WorkerRegistry internal registry;
    JobMarket internal market;
    DisputeGame internal game;
    ToyModel internal model;

    address internal poster = makeAddr("poster");
    address internal worker = makeAddr("worker");
    address internal honest = makeAddr("honest");
    address[3] internal puppets = [makeAddr("puppet0"), makeAddr("puppet1"), makeAddr("puppet2")];
    /// Gas the honest watchtower spent in the current scenario (measured per call + 21k + calldata).
    uint256 internal honestGas;

    function setUp() public {
        vm.warp(1_700_000_000);
        ToyStepper stepper = new ToyStepper();
        model = new ToyModel();
        uint256 n = vm.getNonce(address(this));
        address predictedMarket = vm.computeCreateAddress(address(this), n + 1);
        address predictedGame = vm.computeCreateAddress(address(this), n + 2);
        registry = new WorkerRegistry(predictedMarket, 7 days);
        market = new JobMarket(IWorkerRegistry(address(registry)), predictedGame, MIN_BOND);
        game = new DisputeGame(IJobMarket(address(market)), stepper, 4, CLOCK);
        assertEq(address(game), predictedGame);
        vm.deal(poster, 100 ether);
        vm.deal(worker, 100 ether);
        vm.deal(honest, 100 ether);
        for (uint256 i = 0; i < 3; ++i) {
            vm.deal(puppets[i], 100 ether);
        }
    }

    // ================================================================ helpers

    /// Everything an account owns in the system: wallet + stake (total + unbonding) + credits.
    function _value(address a) internal view returns (uint256 v) {
        IWorkerRegistry.StakeInfo memory s = registry.stakeOf(a);
        v = a.balance + s.total + s.unbonding + registry.credits(a) + market.credits(a) + game.credits(a);
    }

    function _cheaterValue() internal view returns (uint256 v) {
        v = _value(worker);
        for (uint256 i = 0; i < 3; ++i) {
            v += _value(puppets[i]);
        }
    }

    function _spec(uint32 exec) internal view returns (JobSpec memory) {
        return JobSpec({
            specCid: "bafyspec",
            programRoot: model.programRoot(),
            inputsRoot: model.inputsRoot(),
            numUnits: model.numUnits(),
            requiredStake: STAKE,
            claimDeadline: uint64(block.timestamp + 1 days),
            executionTime: exec,
            challengeWindow: WINDOW,
            minGpuMemoryMiB: 0,
            disputeBond: BOND
        });
    }

    /// A toy job posted, claimed and submitted with the worker's (possibly corrupted) result.
    function _submitted(uint256 seed, bool cheat) internal returns (uint256 id) {
        model.build(seed, 3, 3, 2000);
        if (cheat) model.corruptTensor(1, 2, seed, 1, true); // the last op of unit 1: always visible
        vm.prank(worker);
        registry.stake{value: STAKE}();
        JobSpec memory spec = _spec(EXEC); // (reads the model: before the prank)
        vm.prank(poster);
        id = market.postJob{value: REWARD}(spec);
        vm.startPrank(worker);
        market.claimJob(id);
        market.submitResult(id, model.workerResultRoot(), "bafyout");
        vm.stopPrank();
    }

    function _open(uint256 jobId, address who) internal returns (uint256 gameId) {
        uint256 g0 = gasleft();
        vm.prank(who);
        gameId = game.challenge{value: BOND}(jobId);
        if (who == honest) honestGas += g0 - gasleft() + 21_000;
    }

    /// One move of whoever's turn it is in `gameId`: the worker from its own (corrupted) data, the
    /// challenger (honest or puppet) by the honest strategy.
    function _move(uint256 gameId) internal {
        IDisputeGame.Game memory g = game.getGame(gameId);
        (address who, bytes memory data) = g.turn == IDisputeGame.Side.Worker
            ? (g.worker, model.workerMove(game, gameId))
            : (g.challenger, model.challengerMove(game, gameId, 0));
        uint256 g0 = gasleft();
        vm.prank(who);
        (bool ok, bytes memory ret) = address(game).call(data);
        if (who == honest) honestGas += g0 - gasleft() + 21_000 + 16 * data.length;
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    function _playOut(uint256 gameId) internal {
        for (uint256 i = 0; game.getGame(gameId).phase != IDisputeGame.Phase.Resolved; ++i) {
            _move(gameId);
            require(i < 200, "game does not end");
        }
    }

    function _resolved(uint256 gameId) internal view returns (bool) {
        return game.getGame(gameId).phase == IDisputeGame.Phase.Resolved;
    }

    function _log(string memory what, address a, uint256 before_) internal view {
        uint256 after_ = _value(a);
        if (after_ >= before_) console2.log(what, "gained (wei)", after_ - before_);
        else console2.log(what, "lost (wei)", before_ - after_);
    }

    // ================================================================ attack 1: unmeetable deadline

    /// A 1-second executionTime is refused on-chain; at the 300-s floor, expiring a claimed job
    /// returns the poster exactly its reward (minus nothing) and burns 10% of the worker's stake:
    /// the poster gains nothing, so expiring jobs is never a business.
    function test_Attack1_UnmeetableDeadline_PosterGainsNothing() public {
        model.build(1, 3, 3, 2000);
        vm.prank(worker);
        registry.stake{value: STAKE}();
        JobSpec memory s = _spec(1);
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidSpec.selector, "executionTime"));
        market.postJob{value: 1}(s);
        s = _spec(300);
        s.claimDeadline = uint64(block.timestamp + 10); // the job ends (no re-open) at the expiry

        uint256 posterBefore = _value(poster);
        uint256 workerBefore = _value(worker);
        uint256 id = _claimAndMiss(s);
        assertEq(uint8(market.getJob(id).state), uint8(JobState.Expired));
        _log("attack1 poster", poster, posterBefore);
        _log("attack1 worker", worker, workerBefore);
        assertEq(_value(poster), posterBefore, "the poster ends exactly where it started");
        assertEq(workerBefore - _value(worker), STAKE / 10, "the worker loses 10% of the stake, burned");
        assertEq(registry.totalBurned(), STAKE / 10);
    }

    /// Post `s` (reward 1 wei), the worker claims it and lets its 300 s execution deadline pass;
    /// the poster expires it.
    function _claimAndMiss(JobSpec memory s) internal returns (uint256 id) {
        vm.prank(poster);
        id = market.postJob{value: 1}(s);
        vm.prank(worker);
        market.claimJob(id);
        vm.warp(block.timestamp + 301);
        vm.prank(poster);
        market.expireJob(id);
    }

    /// Attack 1b: the same unmeetable deadline while the claim window is still open. The job
    /// re-opens instead of ending; the poster, cancelling it afterwards, still gains nothing, and
    /// the worker's loss is the same burn.
    function test_Attack1b_UnmeetableDeadline_Reopened_PosterGainsNothing() public {
        model.build(1, 3, 3, 2000);
        vm.prank(worker);
        registry.stake{value: STAKE}();
        JobSpec memory s = _spec(300);
        uint256 posterBefore = _value(poster);
        uint256 workerBefore = _value(worker);
        uint256 id = _claimAndMiss(s);
        assertEq(uint8(market.getJob(id).state), uint8(JobState.Open));
        vm.prank(poster);
        market.cancelJob(id);
        assertEq(_value(poster), posterBefore, "the poster ends exactly where it started");
        assertEq(workerBefore - _value(worker), STAKE / 10, "the worker loses 10% of the stake, burned");
    }

    // ================================================================ attack 3: puppet captures the slash

    /// The cheater stalls the honest game and, in the same block, opens a puppet game and loses it
    /// on purpose: the puppet's game ends first, but the honest game was opened first, so the honest
    /// watchtower is paid; the cheater loses more than half its stake.
    function test_Attack3_PuppetLosingFirst_DoesNotCaptureTheSlash() public {
        uint256 id = _submitted(7, true);
        uint256 cheaterBefore = _cheaterValue();
        uint256 honestBefore = _value(honest);
        uint256 posterBefore = _value(poster);
        uint256 a = _open(id, honest);
        uint256 b = _open(id, puppets[0]); // same block
        _playOut(b); // the worker plays its corrupted data: the puppet wins in a few moves
        assertTrue(market.isSlashed(id));
        assertEq(registry.stakeOf(worker).locked, STAKE, "the slash waits for the honest game");
        // The worker stalls the honest game: its clock runs out; anyone resolves it.
        if (game.getGame(a).turn == IDisputeGame.Side.Challenger) _move(a);
        vm.warp(block.timestamp + CLOCK + 1);
        game.resolveTimeout(a);
        assertEq(uint8(game.getGame(a).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertEq(market.getJob(id).firstWinner, honest);
        console2.log("attack3 cheater loss (wei)", cheaterBefore - _cheaterValue());
        console2.log("attack3 honest profit (wei) before gas", _value(honest) - honestBefore);
        console2.log("attack3 honest gas", honestGas);
        _log("attack3 poster", poster, posterBefore);
        assertGe(cheaterBefore - _cheaterValue(), uint256(STAKE) / 2, "cheater loses >= half its stake");
        assertGt(_value(honest) - honestBefore, honestGas * GAS_PRICE, "honest profit covers its gas");
        assertEq(_value(poster), posterBefore + REWARD, "the poster got its escrowed reward back");
    }

    /// Front-running: the puppet opens BEFORE the honest watchtower. The puppet is then paid, but
    /// the cheater still loses at least half its stake (and its reward); the honest game still wins.
    function test_Attack3_FrontRunningPuppet_StillLosesHalf() public {
        uint256 id = _submitted(8, true);
        uint256 cheaterBefore = _cheaterValue();
        uint256 b = _open(id, puppets[0]);
        uint256 a = _open(id, honest);
        _playOut(b);
        _playOut(a);
        assertEq(market.getJob(id).firstWinner, puppets[0]);
        console2.log("front-run cheater loss (wei)", cheaterBefore - _cheaterValue());
        assertGe(cheaterBefore - _cheaterValue(), uint256(STAKE) / 2, "and forgoes its reward");
        assertEq(uint8(game.getGame(a).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
    }

    // ================================================================ attack 5: withheld outputs

    function test_Attack5_DataRequest_UnansweredSlashes() public {
        uint256 id = _submitted(9, false); // an honest result, but the outputs are withheld
        uint256 posterBefore = _value(poster);
        uint256 workerBefore = _value(worker);
        vm.prank(poster);
        uint256 g = game.requestData{value: BOND}(id, 1);
        assertEq(uint8(game.getGame(g).phase), uint8(IDisputeGame.Phase.DataRequest));
        vm.warp(block.timestamp + CLOCK + 1);
        game.resolveTimeout(g);
        assertEq(uint8(market.getJob(id).state), uint8(JobState.Slashed));
        _log("attack5 unanswered: poster", poster, posterBefore);
        _log("attack5 unanswered: worker", worker, workerBefore);
        assertEq(_value(poster) - posterBefore, REWARD + STAKE / 2, "reward back + half the stake");
        assertEq(workerBefore - _value(worker), STAKE, "the whole stake is slashed");
    }

    function test_Attack5_DataRequest_AnsweredPaysTheWorkerAFee() public {
        uint256 id = _submitted(10, false);
        uint256 posterBefore = _value(poster);
        uint256 workerBefore = _value(worker);
        vm.prank(poster);
        uint256 g = game.requestData{value: BOND}(id, 2);
        bytes memory out = model.unitOutput(true, 2);
        bytes32[] memory path = model.resultPath(true, 2);
        // A wrong byte is refused.
        bytes memory bad = bytes.concat(out);
        bad[0] = bytes1(uint8(bad[0]) ^ 1);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputeGame_BadData.selector, g, bad.length));
        game.answerData(g, 0, bad, path);
        vm.expectEmit(address(game));
        emit IDisputeGame.DataServed(g, id, 2, out);
        uint256 g0 = gasleft();
        vm.prank(worker);
        game.answerData(g, 0, out, path);
        console2.log("answerData gas (bytes, gas excl. 21k and calldata)", out.length, g0 - gasleft());
        assertEq(uint8(game.getGame(g).outcome), uint8(IDisputeGame.Outcome.WorkerWon));
        vm.warp(block.timestamp + WINDOW);
        market.finalizeJob(id);
        _log("attack5 answered: poster", poster, posterBefore);
        _log("attack5 answered: worker", worker, workerBefore);
        assertEq(workerBefore + REWARD + BOND / 2, _value(worker), "reward + half the bond");
        assertEq(posterBefore - _value(poster), BOND / 2, "the requester pays half the bond");
    }

    // ================================================================ attack 6: one-wei bonds

    /// One-wei bonds are refused at post time; at the floor, each stalled griefing game costs its
    /// opener the whole bond (half burned, half to the worker), and the worker's defence is paid.
    function test_Attack6_GriefingGamesCostTheirOpeners() public {
        model.build(11, 3, 3, 2000);
        JobSpec memory s = _spec(EXEC);
        s.disputeBond = 1;
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(IJobMarket.JobMarket_InvalidSpec.selector, "disputeBond"));
        market.postJob{value: REWARD}(s);

        uint256 id = _submitted(11, false);
        uint256 griefBefore = _value(puppets[0]);
        uint256 workerBefore = _value(worker);
        uint256[] memory ids = new uint256[](3);
        for (uint256 i = 0; i < 3; ++i) {
            ids[i] = _open(id, puppets[0]);
            _move(ids[i]); // the worker answers at once (its first reveal)
        }
        vm.warp(block.timestamp + CLOCK + 1); // the griefer never moves
        for (uint256 i = 0; i < 3; ++i) {
            game.resolveTimeout(ids[i]);
        }
        market.finalizeJob(id);
        _log("attack6 griefer", puppets[0], griefBefore);
        _log("attack6 worker", worker, workerBefore);
        assertEq(griefBefore - _value(puppets[0]), 3 * uint256(BOND), "each game costs the whole bond");
        assertEq(_value(worker) - workerBefore, REWARD + 3 * (BOND - BOND / 2), "paid, plus half of each bond");
    }

    // ================================================================ model-based random adversary

    /// One random scenario per fuzz run (256 runs by default, 2,048 in the ci profile; 1 to 4 games
    /// each, so >= 256 random games): a cheating worker with up to three puppets that open before or after
    /// the honest game (same block or later), stalls or plays any game, and games that end in any
    /// order. Whatever it does, it loses at least half its stake plus its reward; the honest
    /// watchtower that opened first ends with a profit above its gas at GAS_PRICE; the stake is
    /// settled (nothing stuck). Values are measured after the job was posted and claimed, so the
    /// cheater's forgone reward comes on top of the loss asserted.
    function testFuzz_RandomAdversary_CheaterLosesHalf_FirstHonestProfits(uint256 seed) public {
        uint256 id = _submitted(seed, true);
        uint256 cheaterBefore = _cheaterValue();
        uint256 honestBefore = _value(honest);
        uint256 r = uint256(keccak256(abi.encode(seed)));
        uint256 n = r % 4; // puppets
        uint256 games = n + 1;
        uint256[] memory ids = new uint256[](games);
        uint256 honestGame = _open(id, honest);
        ids[0] = honestGame;
        for (uint256 i = 0; i < n; ++i) {
            if ((r >> (8 + i)) & 1 == 1) vm.warp(block.timestamp + 1 + (r >> (16 + 8 * i)) % 600);
            ids[i + 1] = _open(id, puppets[i]);
        }
        // Random moves and stalls until every game ended. The honest watchtower answers at once
        // whenever it is its turn; the cheater (worker and puppets) plays or stalls at random.
        for (uint256 step = 0; !_allResolved(ids); ++step) {
            if (!_resolved(honestGame) && game.getGame(honestGame).turn == IDisputeGame.Side.Challenger) {
                _move(honestGame);
                continue;
            }
            uint256 x = uint256(keccak256(abi.encode(seed, step)));
            uint256 pick = ids[x % games];
            if (_resolved(pick)) continue;
            if (x % 7 == 0) {
                // everyone the cheater controls stalls: time runs out for whoever must move
                vm.warp(block.timestamp + CLOCK + 1);
                for (uint256 i = 0; i < games; ++i) {
                    if (!_resolved(ids[i])) game.resolveTimeout(ids[i]);
                }
            } else {
                _move(pick);
            }
            require(step < 2000, "scenario does not end");
        }
        assertEq(uint8(market.getJob(id).state), uint8(JobState.Slashed));
        assertEq(market.getJob(id).firstWinner, honest, "the honest game, opened first, is paid");
        assertEq(registry.stakeOf(worker).locked, 0, "settled");
        assertGe(cheaterBefore - _cheaterValue(), uint256(STAKE) / 2, "cheater loss >= half the stake");
        assertGt(_value(honest) - honestBefore, honestGas * GAS_PRICE, "first honest challenger profits");
    }

    function _allResolved(uint256[] memory ids) internal view returns (bool) {
        for (uint256 i = 0; i < ids.length; ++i) {
            if (!_resolved(ids[i])) return false;
        }
        return true;
    }
}
