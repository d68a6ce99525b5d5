// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../src/dispute/DisputeGame.sol";
import {Int8Verifier} from "../../src/dispute/Int8Verifier.sol";
import {Int8Errors} from "../../src/dispute/int8/Int8Errors.sol";
import {LibDescriptor as LD} from "../../src/dispute/int8/LibDescriptor.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {LibMerkle} from "../../src/libraries/LibMerkle.sol";
import {Constants} from "../../src/libraries/Constants.sol";
import {MockMarket} from "../dispute/mocks/MockMarket.sol";

/// @notice The game with the real Int8Verifier on a one-unit, one-op program (relu int8[4] of the
///         unit input), so every descent is empty and the game goes straight to the one-step:
///         challenge -> commitTrace -> proveOp -> revealLeaf -> step. Shows what proveOp's light
///         `outputBytes` means for a descriptor that the full validation rejects: proveOp lands,
///         every step reverts Int8Verifier_BadDescriptor, and the challenger loses on its clock,
///         as it did when proveOp itself reverted (docs/protocol.md 5.7.2).
contract Int8GameTest is Test {
    MockMarket internal market;
    Int8Verifier internal verifier;
    DisputeGame internal game;
    address internal worker = makeAddr("worker");
    address internal challenger = makeAddr("challenger");
    uint96 internal constant BOND = 1 ether;
    uint64 internal constant CLOCK = 1 days;

    bytes internal x = hex"fd0580"; // unit input int8 [-3, 5, -128, 127] (last byte appended below)

    function setUp() public {
        market = new MockMarket();
        verifier = new Int8Verifier();
        game = new DisputeGame(IJobMarket(address(market)), verifier, Constants.SPLIT_BITS, CLOCK);
        market.setGame(address(game));
        x = bytes.concat(x, hex"7f");
    }

    function _tt(uint8 rank, uint32 d0) internal pure returns (bytes memory) {
        return abi.encodePacked(uint8(1), rank, d0, uint32(1), uint32(1), uint32(1));
    }

    /// @dev relu of the unit input; `kind` 1 (UNIT_INPUT) is the valid one.
    function _relu(uint8 kind, uint32 outLen) internal pure returns (bytes memory) {
        return abi.encodePacked(uint8(4), uint8(1), kind, uint32(0), _tt(1, 4), _tt(1, outLen), int8(0));
    }

    function _pad(bytes memory data) internal pure returns (bytes memory leaf) {
        leaf = new bytes(Constants.LEAF_BYTES);
        for (uint256 i = 0; i < data.length; ++i) {
            leaf[i] = data[i];
        }
    }

    /// @dev Post the job (the worker claims `out`), open a game, play it to the one-step.
    function _toOneStep(bytes memory desc, bytes memory out) internal returns (uint256 gid, bytes memory leaf) {
        bytes32 opsRoot = LibMerkle.opLeaf(desc);
        bytes32 outRoot = LibMerkle.leafHash(_pad(out)); // one-leaf tensor: root = leaf hash
        bytes32 inputsRoot = LibMerkle.inputsRoot(bytes32(0), LibMerkle.leafHash(_pad(x)));
        market.setJob(
            1,
            IJobMarket.DisputeContext({
                worker: worker,
                poster: address(this),
                resultRoot: outRoot, // one unit: result root = its output root
                programRoot: LibMerkle.programRoot(Constants.PROGRAM_VERSION, 1, 0, opsRoot),
                inputsRoot: inputsRoot,
                numUnits: 1,
                bond: BOND,
                challengeDeadline: uint64(block.timestamp + 1 days),
                state: 3
            })
        );
        vm.deal(challenger, BOND);
        vm.prank(challenger);
        gid = game.challenge{value: BOND}(1);
        assertEq(uint256(game.getGame(gid).phase), uint256(IDisputeGame.Phase.TraceCommit));
        vm.prank(worker);
        game.commitTrace(gid, 0, outRoot, 1, 0, opsRoot, new bytes32[](0)); // one op: trace root = its output
        assertEq(uint256(game.getGame(gid).phase), uint256(IDisputeGame.Phase.OpReveal));
        vm.prank(challenger);
        game.proveOp(gid, 1, desc, new bytes32[](0));
        assertEq(uint256(game.getGame(gid).phase), uint256(IDisputeGame.Phase.LeafReveal));
        leaf = _pad(out);
        vm.prank(worker);
        game.revealLeaf(gid, 2, leaf);
        assertEq(uint256(game.getGame(gid).phase), uint256(IDisputeGame.Phase.OneStep));
    }

    /// @dev proofs for the unit input: slotRoot || [weightsRoot = 0] || x's leaf (docs/protocol.md 5.7.3).
    function _proofs() internal view returns (bytes memory) {
        return bytes.concat(LibMerkle.leafHash(_pad(x)), bytes32(0), _pad(x));
    }

    function test_ValidDescriptor_WrongWorkerLosesAtTheStep() public {
        (uint256 gid, bytes memory leaf) = _toOneStep(_relu(1, 4), hex"0005017f"); // element 2 is 1, not 0
        vm.prank(challenger);
        game.step(gid, 3, _relu(1, 4), 2, leaf, _proofs());
        assertEq(uint256(game.getGame(gid).outcome), uint256(IDisputeGame.Outcome.ChallengerWon));
    }

    function test_ValidDescriptor_HonestWorkerWinsTheStep() public {
        (uint256 gid, bytes memory leaf) = _toOneStep(_relu(1, 4), hex"0005007f");
        vm.prank(challenger);
        game.step(gid, 3, _relu(1, 4), 2, leaf, _proofs());
        assertEq(uint256(game.getGame(gid).outcome), uint256(IDisputeGame.Outcome.WorkerWon));
    }

    /// @notice A descriptor that the full validation rejects (slot kind 3) but whose declared
    ///         output decodes: proveOp lands with that output size; the step cannot land; the
    ///         challenger loses on its clock. No honest worker executes such a program (the
    ///         runtime rejects it at load), so no honest player is in this game.
    function test_InvalidDescriptor_ProveOpLandsStepRevertsChallengerTimesOut() public {
        bytes memory bad = _relu(3, 4);
        assertEq(verifier.outputBytes(bad), 4);
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadDescriptor.selector, LD.R_SLOT));
        verifier.validateDescriptor(bad);
        (uint256 gid, bytes memory leaf) = _toOneStep(bad, hex"0005017f");
        assertEq(game.getGame(gid).outBytes, 4);
        for (uint256 e = 0; e < 4; ++e) {
            vm.prank(challenger);
            vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadDescriptor.selector, LD.R_SLOT));
            game.step(gid, 3, bad, e, leaf, _proofs());
        }
        vm.warp(block.timestamp + CLOCK + 1);
        game.resolveTimeout(gid);
        assertEq(uint256(game.getGame(gid).outcome), uint256(IDisputeGame.Outcome.WorkerWon));
        assertEq(market.slashCount(), 0);
    }

    /// @notice A declared output the light decoding cannot read still stops proveOp.
    function test_RevertWhen_ProveOpDescriptorUnreadable() public {
        bytes memory bad = _relu(1, 0); // used dim 0: non-canonical output type
        vm.expectRevert(abi.encodeWithSelector(Int8Errors.Int8Verifier_BadDescriptor.selector, LD.R_TYPE));
        verifier.outputBytes(bad);
    }
}
