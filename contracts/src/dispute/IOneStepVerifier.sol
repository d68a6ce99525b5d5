// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IOneStepVerifier
/// @notice The one-step referee behind the dispute game: it knows the op set, the game does not.
///         The game proves the descriptor against the program's ops root before it calls either
///         function, so a verifier only decodes descriptors that the poster committed to.
/// @dev Implementations: dispute/Int8Verifier.sol (the real op set) and the test ToyStepper
///      (contracts/test/dispute/mocks/). Both are pure referees: no state, no callbacks.
interface IOneStepVerifier {
    /// @notice What the game has fixed when it reaches the one-step (docs/protocol.md 5.4).
    /// @param programRoot  the job's program root (on-chain since postJob)
    /// @param inputsRoot   the job's inputs root: nodeHash(weightsRoot, unitInputsRoot)
    /// @param traceRoot    the worker's trace root of the disputed unit; every slot before
    ///                     `opIndex` is agreed by both players
    /// @param unitIndex    the disputed unit
    /// @param numUnits     the job's unit count (depth of the unit-inputs tree)
    /// @param opIndex      the disputed op (its output is slot `opIndex` of the trace)
    /// @param numOps       ops in the program (depth of the trace tree and of the ops tree)
    /// @param numWeights   weight tensors of the program (depth of the weights tree)
    /// @param leafIndex    index of the revealed leaf inside op `opIndex`'s output tensor tree
    struct OneStepContext {
        bytes32 programRoot;
        bytes32 inputsRoot;
        bytes32 traceRoot;
        uint32 unitIndex;
        uint32 numUnits;
        uint32 opIndex;
        uint32 numOps;
        uint32 numWeights;
        uint64 leafIndex;
    }

    /// @notice Byte length of the canonical encoding of the op's output tensor.
    /// @dev Reverts on a descriptor it cannot decode. The game derives the output tree's depth
    ///      and its canonical padding from this value.
    function outputBytes(bytes calldata descriptor) external view returns (uint256);

    /// @notice Recompute output element `elementIndex` of the op and compare it with the worker's
    ///         value inside `leaf` (the LEAF_BYTES bytes of leaf `ctx.leafIndex`, already proven
    ///         against the worker's output root by the game).
    /// @param proofs verifier-specific encoding of the input ranges the element needs, each with a
    ///        range proof against an agreed root (inputsRoot, or traceRoot slots < opIndex).
    /// @return workerCorrect true iff the worker's element equals the recomputed one.
    /// @dev MUST revert (never return false) when the challenger's proofs or element index are
    ///      invalid: a bad proof is the challenger's fault, not evidence against the worker.
    function verify(
        OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external view returns (bool workerCorrect);
}
