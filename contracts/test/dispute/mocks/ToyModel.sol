// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IDisputeGame} from "../../../src/dispute/IDisputeGame.sol";
import {DisputeGame} from "../../../src/dispute/DisputeGame.sol";
import {IJobMarket} from "../../../src/interfaces/IJobMarket.sol";
import {Constants} from "../../../src/libraries/Constants.sol";
import {LibMerkle} from "../../../src/libraries/LibMerkle.sol";
import {ToyStepper} from "./ToyStepper.sol";

/// @title ToyModel
/// @notice A toy job (ToyStepper rule) with two copies of every unit's trace: the HONEST one and
///         the WORKER's (equal, or corrupted anywhere, padding included), plus the move strategies
///         of both players computed from that data. Tests prank the players and send the calls.
/// @dev Test-only. Trees are small (a few leaves), so nodes are recomputed on demand. The honest
///      challenger builds proofs for agreed trace slots from the worker's tree: off-chain it has
///      them from the ChildrenRevealed events (gpumesh.node.dispute does exactly that).
contract ToyModel {
    uint256 internal constant HONEST = 0;
    uint256 internal constant WORKER = 1;
    uint256 internal constant LB = Constants.LEAF_BYTES;

    uint32 public numUnits;
    uint32 public numOps;
    bytes[] internal _unitInputs;
    bytes[] internal _descs;
    uint32[] internal _outBytes;
    bytes32 public opsRoot;
    bytes32 public programRoot;
    bytes32 public unitInputsRoot;
    bytes32 public inputsRoot;
    /// side => unit => op => full-tree bytes (2^depth leaves, so padding can be corrupted too)
    mapping(uint256 => mapping(uint256 => mapping(uint256 => bytes))) internal _data;
    /// side => unit => trace leaves (2^depth(numOps), padding slots included)
    mapping(uint256 => mapping(uint256 => bytes32[])) internal _trace;
    /// side => result leaves (2^depth(numUnits))
    mapping(uint256 => bytes32[]) internal _result;

    // ================================================================ building the job

    /// @notice A random toy job: `units` units, `ops` ops, sizes up to `maxBytes`.
    function build(uint256 seed, uint32 units, uint32 ops, uint256 maxBytes) external {
        numUnits = units;
        numOps = ops;
        uint32 inB = uint32(1 + _rand(seed, 1) % maxBytes);
        bytes32[] memory inRoots = new bytes32[](units);
        for (uint256 u = 0; u < units; ++u) {
            _unitInputs.push(_randomBytes(keccak256(abi.encode(seed, "in", u)), inB));
            inRoots[u] = LibMerkle.tensorRoot(_unitInputs[u]);
        }
        bytes32[] memory opLeaves = new bytes32[](ops);
        uint32 prev = inB;
        for (uint256 t = 0; t < ops; ++t) {
            uint32 outB = uint32(1 + _rand(seed, 100 + t) % maxBytes);
            bytes memory d = abi.encodePacked(outB, prev, uint8(_rand(seed, 200 + t)));
            _descs.push(d);
            _outBytes.push(outB);
            opLeaves[t] = keccak256(abi.encodePacked(Constants.TAG_OP, d));
            prev = outB;
        }
        opsRoot = rootOf(_pad(opLeaves));
        programRoot = LibMerkle.programRoot(Constants.PROGRAM_VERSION, ops, 0, opsRoot);
        unitInputsRoot = rootOf(_pad(inRoots));
        inputsRoot = LibMerkle.inputsRoot(bytes32(0), unitInputsRoot);
        for (uint256 u = 0; u < units; ++u) {
            _run(HONEST, u, 0);
            _run(WORKER, u, 0);
        }
        _rebuildResult(HONEST);
        _rebuildResult(WORKER);
    }

    /// @notice The worker flips `mask` into byte `pos` (mod the full tree) of op `t`'s output in
    ///         unit `u`; with `propagate` it recomputes later ops from the corrupted value.
    function corruptTensor(uint256 u, uint256 t, uint256 pos, uint8 mask, bool propagate) external {
        bytes storage b = _data[WORKER][u][t];
        pos %= b.length;
        b[pos] = bytes1(uint8(b[pos]) ^ mask);
        if (propagate && t + 1 < numOps) _run(WORKER, u, t + 1);
        _rebuildTrace(WORKER, u);
        _rebuildResult(WORKER);
    }

    /// @notice The worker puts `v` in a padding slot of unit `u`'s trace (slot >= numOps).
    function corruptTracePadding(uint256 u, uint256 slot, bytes32 v) external returns (bool) {
        bytes32[] storage tr = _trace[WORKER][u];
        if (tr.length == numOps) return false;
        tr[numOps + slot % (tr.length - numOps)] = v;
        return true;
    }

    /// @notice The worker puts `v` in a padding slot of its result tree (slot >= numUnits).
    function corruptResultPadding(uint256 slot, bytes32 v) external returns (bool) {
        bytes32[] storage r = _result[WORKER];
        if (r.length == numUnits) return false;
        r[numUnits + slot % (r.length - numUnits)] = v;
        return true;
    }

    function jobContext(address worker, uint96 bond, uint64 deadline)
        external
        view
        returns (IJobMarket.DisputeContext memory)
    {
        return IJobMarket.DisputeContext({
            worker: worker,
            poster: address(0xB0B),
            resultRoot: rootOf(_result[WORKER]),
            programRoot: programRoot,
            inputsRoot: inputsRoot,
            numUnits: numUnits,
            bond: bond,
            challengeDeadline: deadline,
            state: 3
        });
    }

    function workerResultRoot() external view returns (bytes32) {
        return rootOf(_result[WORKER]);
    }

    function honestResultRoot() external view returns (bytes32) {
        return rootOf(_result[HONEST]);
    }

    function traceLeaves(bool worker, uint256 u) external view returns (bytes32[] memory) {
        return _trace[worker ? WORKER : HONEST][u];
    }

    /// @notice Unit `u`'s output bytes (the last op's output) as the worker or the honest side has them.
    function unitOutput(bool worker, uint256 u) external view returns (bytes memory out) {
        bytes storage full = _data[worker ? WORKER : HONEST][u][numOps - 1];
        uint256 n = _outBytes[numOps - 1];
        out = new bytes(n);
        for (uint256 i = 0; i < n; ++i) {
            out[i] = full[i];
        }
    }

    /// @notice Inclusion path of unit `u`'s output root in the worker's (or honest) result tree.
    function resultPath(bool worker, uint256 u) external view returns (bytes32[] memory) {
        return pathOf(_result[worker ? WORKER : HONEST], u);
    }

    function outBytes(uint256 t) external view returns (uint32) {
        return _outBytes[t];
    }

    function descriptor(uint256 t) external view returns (bytes memory) {
        return _descs[t];
    }

    // ================================================================ strategies

    /// @notice The worker's next move from its own data (honest or corrupted alike).
    function workerMove(DisputeGame game, uint256 gameId) external view returns (bytes memory) {
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.phase == IDisputeGame.Phase.TraceCommit) {
            bytes32[] memory tr = _trace[WORKER][g.unitIndex];
            return abi.encodeCall(
                DisputeGame.commitTrace,
                (gameId, g.moveNo, rootOf(tr), numOps, 0, opsRoot, pathOf(tr, numOps - 1))
            );
        }
        if (g.phase == IDisputeGame.Phase.LeafReveal) {
            return abi.encodeCall(DisputeGame.revealLeaf, (gameId, g.moveNo, _leafBytes(WORKER, g, g.index)));
        }
        bytes32[] memory leaves = _leavesFor(WORKER, g);
        uint256 m = _m(game, g);
        bytes32[] memory children = new bytes32[](1 << m);
        for (uint256 c = 0; c < children.length; ++c) {
            children[c] = nodeAt(leaves, g.height - m, (uint256(g.index) << m) | c);
        }
        return abi.encodeCall(DisputeGame.reveal, (gameId, g.moveNo, children));
    }

    /// @notice The challenger's next move. Honest (`rnd` == 0): first differing child, first
    ///         differing element. Otherwise `rnd` drives arbitrary (non-padding) picks and elements.
    function challengerMove(DisputeGame game, uint256 gameId, uint256 rnd) external view returns (bytes memory) {
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.phase == IDisputeGame.Phase.OpReveal) {
            return abi.encodeCall(
                DisputeGame.proveOp, (gameId, g.moveNo, _descs[g.opIndex], pathOf(_opLeaves(), g.opIndex))
            );
        }
        if (g.phase == IDisputeGame.Phase.OneStep) return _stepCall(g, gameId, rnd);
        bytes32[] memory mine = _leavesFor(HONEST, g);
        bytes32[] memory theirs = _leavesFor(WORKER, g);
        uint256 m = _m(game, g);
        uint256 h = g.height - m;
        uint256 pickC = type(uint256).max;
        if (rnd == 0) {
            for (uint256 c = 0; c < (1 << m); ++c) {
                uint256 idx = (uint256(g.index) << m) | c;
                if (nodeAt(mine, h, idx) != nodeAt(theirs, h, idx)) {
                    pickC = c;
                    break;
                }
            }
        }
        if (pickC == type(uint256).max) {
            // Arbitrary pick among the non-padding children (padding ones would only revert).
            uint256 real = 0;
            for (uint256 c = 0; c < (1 << m); ++c) {
                if ((((uint256(g.index) << m) | c) << h) < g.count) ++real;
            }
            pickC = rnd % real;
        }
        uint256 idx2 = (uint256(g.index) << m) | pickC;
        bytes32[] memory path = new bytes32[](m);
        for (uint256 l = 0; l < m; ++l) {
            path[l] = nodeAt(theirs, h + l, (idx2 >> l) ^ 1);
        }
        return abi.encodeCall(DisputeGame.pick, (gameId, g.moveNo, pickC, nodeAt(theirs, h, idx2), path));
    }

    function _stepCall(IDisputeGame.Game memory g, uint256 gameId, uint256 rnd) internal view returns (bytes memory) {
        uint256 e = _element(g, rnd);
        bytes memory leaf = _leafBytes(WORKER, g, g.index);
        bytes memory proofs = _proofs(g, e);
        return abi.encodeCall(DisputeGame.step, (gameId, g.moveNo, _descs[g.opIndex], e, leaf, proofs));
    }

    /// @dev Honest: the first data element of the revealed leaf that differs; else `rnd` picks.
    function _element(IDisputeGame.Game memory g, uint256 rnd) internal view returns (uint256) {
        uint256 outB = _outBytes[g.opIndex];
        uint256 base = uint256(g.index) * LB;
        uint256 end = outB < base + LB ? outB : base + LB;
        if (rnd == 0) {
            bytes memory theirs = _data[WORKER][g.unitIndex][g.opIndex];
            bytes memory mine = _data[HONEST][g.unitIndex][g.opIndex];
            for (uint256 i = base; i < end; ++i) {
                if (theirs[i] != mine[i]) return i;
            }
        }
        return base + (rnd % (end - base));
    }

    /// @dev ToyStepper proofs for output element `e`: the input leaf from an agreed root.
    function _proofs(IDisputeGame.Game memory g, uint256 e) internal view returns (bytes memory) {
        ToyStepper.Proofs memory p;
        bytes memory input;
        uint256 inB;
        if (g.opIndex == 0) {
            input = _unitInputs[g.unitIndex];
            inB = input.length;
            p.inRoot = LibMerkle.tensorRoot(input);
            bytes32[] memory inRoots = new bytes32[](numUnits);
            for (uint256 u = 0; u < numUnits; ++u) {
                inRoots[u] = LibMerkle.tensorRoot(_unitInputs[u]);
            }
            p.rootPath = pathOf(_pad(inRoots), g.unitIndex);
        } else {
            input = _data[WORKER][g.unitIndex][g.opIndex - 1];
            inB = _outBytes[g.opIndex - 1];
            bytes32[] memory tr = _trace[WORKER][g.unitIndex];
            p.inRoot = tr[g.opIndex - 1];
            p.rootPath = pathOf(tr, g.opIndex - 1);
        }
        uint256 j = e % inB;
        uint256 li = j / LB;
        bytes32[] memory tl = _tensorLeaves(input, LibMerkle.tensorDepth(inB));
        p.inLeaf = _slice(input, li * LB);
        p.rangeSiblings = pathOf(tl, li);
        return abi.encode(p);
    }

    // ================================================================ trees

    function rootOf(bytes32[] memory leaves) public pure returns (bytes32) {
        uint256 d = 0;
        while ((uint256(1) << d) < leaves.length) ++d;
        return nodeAt(leaves, d, 0);
    }

    /// @notice Node at (height, index) of the complete tree over `leaves` (a power of two long).
    function nodeAt(bytes32[] memory leaves, uint256 height, uint256 index) public pure returns (bytes32) {
        if (height == 0) return leaves[index];
        return LibMerkle.nodeHash(nodeAt(leaves, height - 1, 2 * index), nodeAt(leaves, height - 1, 2 * index + 1));
    }

    function pathOf(bytes32[] memory leaves, uint256 index) public pure returns (bytes32[] memory path) {
        uint256 d = 0;
        while ((uint256(1) << d) < leaves.length) ++d;
        path = new bytes32[](d);
        for (uint256 h = 0; h < d; ++h) {
            path[h] = nodeAt(leaves, h, (index >> h) ^ 1);
        }
    }

    function _leavesFor(uint256 side, IDisputeGame.Game memory g) internal view returns (bytes32[] memory) {
        if (g.phase == IDisputeGame.Phase.UnitDescent) return _result[side];
        if (g.phase == IDisputeGame.Phase.TraceDescent) return _trace[side][g.unitIndex];
        return _tensorLeaves(_data[side][g.unitIndex][g.opIndex], LibMerkle.tensorDepth(_outBytes[g.opIndex]));
    }

    function _tensorLeaves(bytes memory full, uint256 depth) internal pure returns (bytes32[] memory l) {
        l = new bytes32[](1 << depth);
        for (uint256 i = 0; i < l.length; ++i) {
            l[i] = LibMerkle.leafHash(_slice(full, i * LB));
        }
    }

    function _leafBytes(uint256 side, IDisputeGame.Game memory g, uint256 li) internal view returns (bytes memory) {
        return _slice(_data[side][g.unitIndex][g.opIndex], li * LB);
    }

    function _slice(bytes memory b, uint256 off) internal pure returns (bytes memory out) {
        out = new bytes(LB);
        for (uint256 i = 0; i < LB && off + i < b.length; ++i) {
            out[i] = b[off + i];
        }
    }

    function _opLeaves() internal view returns (bytes32[] memory) {
        bytes32[] memory l = new bytes32[](numOps);
        for (uint256 t = 0; t < numOps; ++t) {
            l[t] = keccak256(abi.encodePacked(Constants.TAG_OP, _descs[t]));
        }
        return _pad(l);
    }

    function _pad(bytes32[] memory v) internal pure returns (bytes32[] memory out) {
        uint256 n = 1;
        while (n < v.length) n <<= 1;
        out = new bytes32[](n);
        for (uint256 i = 0; i < v.length; ++i) {
            out[i] = v[i];
        }
    }

    function _m(DisputeGame game, IDisputeGame.Game memory g) internal view returns (uint256) {
        uint256 k = game.splitBits();
        return g.height < k ? g.height : k;
    }

    // ================================================================ execution

    /// @dev (Re)compute ops from..numOps-1 of unit u on `side` from its own earlier slots.
    function _run(uint256 side, uint256 u, uint256 from) internal {
        for (uint256 t = from; t < numOps; ++t) {
            (uint32 outB, uint32 inB, uint8 addend) = this.decodeDesc(_descs[t]);
            bytes memory input = t == 0 ? _unitInputs[u] : _data[side][u][t - 1];
            bytes memory out = new bytes(LB << LibMerkle.tensorDepth(outB));
            for (uint256 i = 0; i < outB; ++i) {
                unchecked {
                    out[i] = bytes1(uint8(input[i % inB]) + addend);
                }
            }
            _data[side][u][t] = out;
        }
        _rebuildTrace(side, u);
    }

    function decodeDesc(bytes calldata d) external pure returns (uint32, uint32, uint8) {
        return (uint32(bytes4(d[0:4])), uint32(bytes4(d[4:8])), uint8(d[8]));
    }

    function _rebuildTrace(uint256 side, uint256 u) internal {
        bytes32[] memory l = new bytes32[](numOps);
        for (uint256 t = 0; t < numOps; ++t) {
            bytes memory full = _data[side][u][t];
            l[t] = rootOf(_tensorLeaves(full, LibMerkle.tensorDepth(_outBytes[t])));
        }
        _trace[side][u] = _pad(l);
    }

    function _rebuildResult(uint256 side) internal {
        bytes32[] memory l = new bytes32[](numUnits);
        for (uint256 u = 0; u < numUnits; ++u) {
            l[u] = _trace[side][u][numOps - 1];
        }
        _result[side] = _pad(l);
    }

    function _rand(uint256 seed, uint256 salt) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, salt)));
    }

    function _randomBytes(bytes32 seed, uint256 n) internal pure returns (bytes memory out) {
        out = new bytes(n);
        for (uint256 i = 0; i < n; i += 32) {
            bytes32 w = keccak256(abi.encode(seed, i));
            for (uint256 j = 0; j < 32 && i + j < n; ++j) {
                out[i + j] = w[j];
            }
        }
    }
}
