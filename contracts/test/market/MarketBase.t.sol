// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";
import {Job, JobSpec, JobState} from "../../src/types/JobTypes.sol";
import {MockDisputeGame} from "../mocks/MockDisputeGame.sol";

/// @notice Shared set-up: registry and market wired like Deploy.s.sol does (predicted address),
///         with MockDisputeGame as the game; funded actors; a default spec.
abstract contract MarketBase is Test {
    uint64 internal constant UNBONDING = 7 days;
    uint96 internal constant REWARD = 1 ether;
    uint96 internal constant STAKE = 2 ether;
    uint96 internal constant BOND = 0.1 ether; // = MIN_BOND_BPS (5%) of STAKE
    uint96 internal constant MIN_BOND = 0.01 ether;
    uint32 internal constant EXEC = 1 hours;
    uint32 internal constant WINDOW = 1 days;

    MockDisputeGame internal game;
    WorkerRegistry internal registry;
    JobMarket internal market;

    address internal poster = makeAddr("poster");
    address internal worker = makeAddr("worker");
    address internal other = makeAddr("other");
    address internal challenger = makeAddr("challenger");

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        game = new MockDisputeGame();
        address predictedMarket = vm.computeCreateAddress(address(this), vm.getNonce(address(this)) + 1);
        registry = new WorkerRegistry(predictedMarket, UNBONDING);
        market = new JobMarket(IWorkerRegistry(address(registry)), address(game), MIN_BOND);
        assertEq(address(market), predictedMarket, "market address prediction");
        game.setMarket(market);
        vm.deal(poster, 1000 ether);
        vm.deal(worker, 1000 ether);
        vm.deal(other, 1000 ether);
    }

    function _spec() internal view returns (JobSpec memory s) {
        s = JobSpec({
            specCid: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            programRoot: keccak256("program"),
            inputsRoot: keccak256("inputs"),
            numUnits: 4,
            requiredStake: STAKE,
            claimDeadline: uint64(block.timestamp + 1 days),
            executionTime: EXEC,
            challengeWindow: WINDOW,
            minGpuMemoryMiB: 8192,
            disputeBond: BOND
        });
    }

    function _post() internal returns (uint256 id) {
        vm.prank(poster);
        id = market.postJob{value: REWARD}(_spec());
    }

    function _stake(address who, uint256 amount) internal {
        vm.prank(who);
        registry.stake{value: amount}();
    }

    function _claimed() internal returns (uint256 id) {
        _stake(worker, STAKE);
        id = _post();
        vm.prank(worker);
        market.claimJob(id);
    }

    function _submitted() internal returns (uint256 id) {
        id = _claimed();
        vm.prank(worker);
        market.submitResult(id, keccak256("result"), "bafyoutputs");
    }

    function _state(uint256 id) internal view returns (JobState) {
        return market.getJob(id).state;
    }
}
