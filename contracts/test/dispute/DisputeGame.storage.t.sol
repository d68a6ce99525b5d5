// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IDisputeGame} from "../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../src/dispute/DisputeGame.sol";
import {IOneStepVerifier} from "../../src/dispute/IOneStepVerifier.sol";
import {IJobMarket} from "../../src/interfaces/IJobMarket.sol";
import {Constants} from "../../src/libraries/Constants.sol";
import {LibMerkle} from "../../src/libraries/LibMerkle.sol";
import {DisputeBase} from "./DisputeBase.sol";

/// @dev Exposes the word-wise padding check of revealLeaf.
contract DisputeGameHarness is DisputeGame {
    constructor() DisputeGame(IJobMarket(address(1)), IOneStepVerifier(address(2)), 4, 1) {}

    function zeroFrom(bytes calldata leaf, uint256 from) external pure returns (bool) {
        return _zeroFrom(leaf, from);
    }
}

/// @notice The packed storage behind getGame (placeholders never shown, the program root rebuilt
///         from the proven header equals the job's at every phase) and the word-wise padding check.
contract DisputeGameStorageTest is DisputeBase {
    uint256 internal constant JOB = 3;

    function setUp() public {
        _deploy(2);
        model.build(7, 5, 6, 3000);
    }

    /// @notice At every move of a whole game, getGame shows what the unpacked struct held: the
    ///         job's program and inputs roots; traceRoot / opsRoot 0 until commitTrace, then the
    ///         worker's; opLeaf 0 until proveOp, then the op's leaf.
    function test_GetGame_ShowsTheSameFieldsAtEveryPhase() public {
        model.corruptTensor(1, 2, 5, 0x33, true);
        _job(JOB);
        uint256 id = _open(JOB, challenger);
        IJobMarket.DisputeContext memory job = market.disputeContext(JOB);
        bytes32 traceRoot;
        bytes32 opLeaf;
        uint256 moves;
        while (true) {
            IDisputeGame.Game memory g = _g(id);
            assertEq(g.programRoot, job.programRoot, "program root");
            assertEq(g.inputsRoot, job.inputsRoot, "inputs root");
            assertEq(g.jobId, JOB);
            assertEq(g.numUnits, job.numUnits);
            bool committed = g.numOps != 0;
            assertEq(g.traceRoot, committed ? traceRoot : bytes32(0), "trace root");
            assertEq(g.opsRoot, committed ? model.opsRoot() : bytes32(0), "ops root");
            assertEq(g.opLeaf, g.outBytes != 0 ? opLeaf : bytes32(0), "op leaf");
            if (g.phase == IDisputeGame.Phase.Resolved) break;
            (address who, bytes memory data) = _next(id, 0);
            bytes4 sel = bytes4(data);
            (bool ok,) = _send(who, data);
            assertTrue(ok);
            if (sel == DisputeGame.commitTrace.selector) {
                (,, traceRoot) = abi.decode(_args(data), (uint256, uint32, bytes32));
            } else if (sel == DisputeGame.proveOp.selector) {
                (,, bytes memory d,) = abi.decode(_args(data), (uint256, uint32, bytes, bytes32[]));
                opLeaf = LibMerkle.opLeaf(d);
            }
            require(++moves < 200, "game does not end");
        }
        assertTrue(traceRoot != bytes32(0) && opLeaf != bytes32(0), "the game reached the one-step");
        assertEq(uint8(_g(id).outcome), uint8(IDisputeGame.Outcome.ChallengerWon));
    }

    function _args(bytes memory data) internal pure returns (bytes memory a) {
        a = new bytes(data.length - 4);
        for (uint256 i = 0; i < a.length; ++i) {
            a[i] = data[i + 4];
        }
    }

    /// @notice _zeroFrom equals the byte-by-byte check it replaced, for any padding start and any
    ///         single non-zero byte (or none).
    function testFuzz_ZeroFrom_EqualsByteLoop(uint256 from, uint256 pos, uint8 v) public {
        DisputeGameHarness h = new DisputeGameHarness();
        from = bound(from, 0, Constants.LEAF_BYTES);
        bytes memory leaf = new bytes(Constants.LEAF_BYTES);
        pos = bound(pos, 0, Constants.LEAF_BYTES - 1);
        leaf[pos] = bytes1(v);
        bool want = true;
        for (uint256 i = from; i < Constants.LEAF_BYTES; ++i) {
            if (leaf[i] != 0) want = false;
        }
        assertEq(h.zeroFrom(leaf, from), want);
    }

    /// @notice The edges: the byte just before the padding start never counts, the first padding
    ///         byte and the leaf's last byte always do.
    function test_ZeroFrom_Edges() public {
        DisputeGameHarness h = new DisputeGameHarness();
        uint256[5] memory starts = [uint256(0), 1, 31, 32, 1000];
        for (uint256 s = 0; s < starts.length; ++s) {
            uint256 from = starts[s];
            bytes memory leaf = new bytes(Constants.LEAF_BYTES);
            assertTrue(h.zeroFrom(leaf, from));
            if (from > 0) {
                leaf[from - 1] = 0xff;
                assertTrue(h.zeroFrom(leaf, from), "data byte before the padding");
            }
            leaf[from] = 0x01;
            assertFalse(h.zeroFrom(leaf, from), "first padding byte");
            leaf[from] = 0;
            leaf[Constants.LEAF_BYTES - 1] = 0x80;
            assertFalse(h.zeroFrom(leaf, from), "last byte");
        }
        assertTrue(h.zeroFrom(new bytes(Constants.LEAF_BYTES), Constants.LEAF_BYTES), "a full data leaf");
    }
}
