// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IDisputeGame} from "../../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../../src/dispute/DisputeGame.sol";
import {MockMarket} from "../mocks/MockMarket.sol";
import {ToyModel} from "../mocks/ToyModel.sol";

/// @notice Invariant handler: random toy jobs (honest or corrupted workers), games opened by an
///         honest challenger against a wrong result or by a misbehaving one against a right result,
///         so every game has exactly one honest side. The honest side always answers at once (before
///         any time passes); the other side plays random moves, garbage, or nothing.
contract DisputeHandler is Test {
    DisputeGame public game;
    MockMarket public market;
    uint96 public constant BOND = 1 ether;

    address[3] internal _challengers = [address(0xC1), address(0xC2), address(0xC3)];
    address public worker = address(0x3001);

    uint256[] public jobIds;
    mapping(uint256 jobId => ToyModel) public modelOf;
    mapping(uint256 jobId => bool) public workerWrong;
    uint256[] public gameIds;
    mapping(uint256 gameId => IDisputeGame.Side) public honestSide;
    mapping(uint256 gameId => uint256) public rndOf;

    uint256 public ghostBondsIn;
    uint256 public ghostWithdrawn;
    bool public ghostHonestMoveFailed;
    uint256 public ghostGamesResolved;

    constructor(DisputeGame game_, MockMarket market_) {
        game = game_;
        market = market_;
    }

    function challengers() external view returns (address[3] memory) {
        return _challengers;
    }

    function gameCount() external view returns (uint256) {
        return gameIds.length;
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    // ------------------------------------------------------------ actions

    function newJob(uint256 seed, uint8 units, uint8 ops, bool corrupt, uint256 u, uint256 t, uint256 pos) external {
        _honestCatchUp();
        if (jobIds.length >= 3) return;
        units = uint8(bound(units, 1, 3));
        ops = uint8(bound(ops, 1, 4));
        ToyModel m = new ToyModel();
        m.build(seed, units, ops, 2100);
        if (corrupt) m.corruptTensor(u % units, t % ops, pos, uint8(bound(seed, 1, 255)), (seed & 1) == 1);
        uint256 jobId = jobIds.length + 1;
        jobIds.push(jobId);
        modelOf[jobId] = m;
        workerWrong[jobId] = m.workerResultRoot() != m.honestResultRoot();
        market.setJob(jobId, m.jobContext(worker, BOND, uint64(block.timestamp + 10 days)));
    }

    function openGame(uint256 jobSel, uint256 who, uint256 rnd) external {
        _honestCatchUp();
        if (jobIds.length == 0) return;
        uint256 jobId = jobIds[jobSel % jobIds.length];
        if (market.isSlashed(jobId) || block.timestamp >= market.disputeContext(jobId).challengeDeadline) return;
        address c = _challengers[who % 3];
        vm.deal(c, BOND);
        vm.prank(c);
        uint256 id = game.challenge{value: BOND}(jobId);
        ghostBondsIn += BOND;
        gameIds.push(id);
        // A wrong result is challenged honestly; a right one only by a misbehaving challenger.
        honestSide[id] = workerWrong[jobId] ? IDisputeGame.Side.Challenger : IDisputeGame.Side.Worker;
        rndOf[id] = workerWrong[jobId] ? 0 : bound(rnd, 1, type(uint128).max);
        _honestCatchUp();
    }

    /// @notice The misbehaving side of a game makes up to 16 moves (the honest side answers each):
    ///         its strategy (random picks / corrupt data) or, now and then, garbage that must revert.
    function misbehave(uint256 gameSel, uint256 rnd, uint8 garbageEvery) external {
        _honestCatchUp();
        if (gameIds.length == 0) return;
        uint256 id = gameIds[gameSel % gameIds.length];
        garbageEvery = uint8(bound(garbageEvery, 2, 16));
        for (uint256 step = 0; step < 16; ++step) {
            IDisputeGame.Game memory g = game.getGame(id);
            if (g.phase == IDisputeGame.Phase.Resolved || g.turn == honestSide[id]) return;
            uint256 r = uint256(keccak256(abi.encode(rnd, step)));
            bytes memory data = r % garbageEvery == 0 ? _garbage(g, id, r) : _strategy(g, id, r);
            vm.prank(g.turn == IDisputeGame.Side.Worker ? g.worker : g.challenger);
            (bool ok,) = address(game).call(data);
            ok;
            _noteResolved(id);
            _honestCatchUp();
        }
    }

    function _garbage(IDisputeGame.Game memory g, uint256 id, uint256 r) internal pure returns (bytes memory) {
        bytes32[] memory junk = new bytes32[](1 << (r % 3));
        junk[0] = bytes32(r);
        if (r % 2 == 0) return abi.encodeCall(DisputeGame.pick, (id, g.moveNo, r % 4, bytes32(r), junk));
        return abi.encodeCall(DisputeGame.reveal, (id, g.moveNo, junk));
    }

    function _strategy(IDisputeGame.Game memory g, uint256 id, uint256 r) internal view returns (bytes memory) {
        ToyModel m = modelOf[g.jobId];
        if (g.turn == IDisputeGame.Side.Worker) return m.workerMove(game, id);
        return m.challengerMove(game, id, uint256(keccak256(abi.encode(rndOf[id], r))) | 1);
    }

    function warp(uint256 secs) external {
        _honestCatchUp();
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
    }

    function resolveTimeout(uint256 gameSel) external {
        if (gameIds.length == 0) return;
        uint256 id = gameIds[gameSel % gameIds.length];
        (bool ok,) = address(game).call(abi.encodeCall(DisputeGame.resolveTimeout, (id)));
        ok;
        _noteResolved(id);
    }

    function withdraw(uint256 who) external {
        address a = who % 4 == 3 ? worker : _challengers[who % 4];
        uint256 c = game.credits(a);
        if (c == 0) return;
        vm.prank(a);
        game.withdraw();
        ghostWithdrawn += c;
    }

    // ------------------------------------------------------------ the honest side

    /// @dev Every honest side whose turn it is moves now; its moves must always land.
    function _honestCatchUp() internal {
        for (uint256 i = 0; i < gameIds.length; ++i) {
            uint256 id = gameIds[i];
            for (uint256 guard = 0; guard < 8; ++guard) {
                IDisputeGame.Game memory g = game.getGame(id);
                if (g.phase == IDisputeGame.Phase.Resolved || g.turn != honestSide[id]) break;
                ToyModel m = modelOf[g.jobId];
                bytes memory data;
                address who;
                if (g.turn == IDisputeGame.Side.Worker) {
                    (who, data) = (g.worker, m.workerMove(game, id));
                } else {
                    (who, data) = (g.challenger, m.challengerMove(game, id, 0));
                }
                vm.prank(who);
                (bool ok,) = address(game).call(data);
                if (!ok) {
                    ghostHonestMoveFailed = true;
                    break;
                }
                _noteResolved(id);
            }
        }
    }

    mapping(uint256 => bool) internal _counted;
    uint256 public ghostOneStepEnds;

    function _noteResolved(uint256 id) internal {
        if (!_counted[id] && game.getGame(id).phase == IDisputeGame.Phase.Resolved) {
            _counted[id] = true;
            ++ghostGamesResolved;
            if (game.getGame(id).opLeaf != bytes32(0)) ++ghostOneStepEnds;
        }
    }
}
