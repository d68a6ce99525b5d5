// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeBase} from "./DisputeBase.sol";

/// @notice Random jobs, random corruption, random k: the honest player wins every game.
contract DisputeGameFuzzTest is DisputeBase {
    uint256 internal constant JOB = 1;

    function _k(uint8 sel) internal pure returns (uint256) {
        uint8[4] memory ks = [1, 2, 3, 4];
        return ks[sel % 4];
    }

    function testFuzz_HonestChallenger_BeatsAnyCorruption(
        uint256 seed,
        uint8 units,
        uint8 ops,
        uint256 u,
        uint256 t,
        uint256 pos,
        uint8 mask,
        bool propagate,
        uint8 kSel
    ) public {
        _deploy(_k(kSel));
        units = uint8(bound(units, 1, 5));
        ops = uint8(bound(ops, 1, 6));
        mask = uint8(bound(mask, 1, 255));
        model.build(seed, units, ops, 2500);
        // pos ranges over the whole tree, so padding bytes and padding leaves get corrupted too
        model.corruptTensor(u % units, t % ops, pos, mask, propagate);
        // A corruption that later ops never read leaves the result right: nothing to dispute.
        if (model.workerResultRoot() == model.honestResultRoot()) return;
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        _play(id, 0);
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
        assertTrue(market.isSlashed(JOB));
    }

    function testFuzz_HonestWorker_BeatsAnyChallenger(uint256 seed, uint8 units, uint8 ops, uint256 rnd, uint8 kSel)
        public
    {
        _deploy(_k(kSel));
        model.build(seed, uint8(bound(units, 1, 5)), uint8(bound(ops, 1, 6)), 2500);
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        _play(id, bound(rnd, 1, type(uint256).max));
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.WorkerWon));
        assertFalse(market.isSlashed(JOB));
    }

    function testFuzz_MoveCount_MatchesDepths(uint256 seed, uint8 units, uint8 ops, uint8 kSel) public {
        uint256 k = _k(kSel);
        _deploy(k);
        units = uint8(bound(units, 1, 5));
        ops = uint8(bound(ops, 1, 6));
        model.build(seed, units, ops, 2500);
        model.corruptTensor(0, ops - 1, 0, 1, false);
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        uint256 moves = _play(id, 0);
        // rounds = ceil(depth / k) per tree, two moves each; + trace commit, op proof, leaf
        // reveal, one-step. (Byte 0 of the last op: the tensor descent goes to leaf 0.)
        uint256 expected = 4;
        uint256[3] memory depths = [_depth(units), _depth(ops), _depth((model.outBytes(ops - 1) + 1023) / 1024)];
        for (uint256 i = 0; i < 3; ++i) {
            expected += 2 * ((depths[i] + k - 1) / k);
        }
        assertEq(moves, expected);
    }

    function _depth(uint256 n) internal pure returns (uint256 d) {
        while ((uint256(1) << d) < n) ++d;
    }
}
