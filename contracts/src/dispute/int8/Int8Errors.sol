// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Int8Errors
/// @notice Custom errors of the int8 one-step verifier (Int8Verifier and its int8/ libraries).
///         Every one of them is the CHALLENGER's fault (a descriptor, element or proof it cannot
///         back up): the verifier reverts, the game keeps the challenger's clock running, and the
///         worker is never judged on bad evidence (IOneStepVerifier.verify).
/// @dev An interface so that Int8Verifier inherits the errors into its ABI (the Python side decodes
///      them by name); the libraries revert with `Int8Errors.X(...)`. docs/protocol.md 5.7.5.
interface Int8Errors {
    /// @notice The descriptor breaks docs/protocol.md 3.3-3.4 (the rule the Python validator
    ///         enforces). `reason`: LibDescriptor.R_* (1 length, 2 opcode, 3 slot, 4 tensor type,
    ///         5 requant block, 6 input count, 7 input types, 8 attribute range, 9 declared output,
    ///         10 tensor above 2^28 bytes, 11 one-step reads above MAX_STEP_LEAVES /
    ///         MAX_STEP_ELEMENTS).
    error Int8Verifier_BadDescriptor(uint8 reason);
    /// @notice The element is outside the output tensor or outside the revealed leaf.
    error Int8Verifier_BadElement(uint256 elementIndex, uint256 outCount, uint64 leafIndex);
    /// @notice The revealed leaf is not LEAF_BYTES long.
    error Int8Verifier_BadLeaf(uint256 length);
    /// @notice The proofs blob is shorter or longer than the element's inputs require.
    error Int8Verifier_BadProofsLength(uint256 length, uint256 needed);
    /// @notice A slot root does not chain to the agreed commitment (inputs root or trace root), or
    ///         the slot is not agreed (an op output at or after the disputed op, a weight or unit
    ///         index outside the job).
    error Int8Verifier_BadSlotRoot(uint256 input, uint256 kind, uint256 index);
    /// @notice A range proof does not rebuild its slot root.
    error Int8Verifier_BadRangeProof(uint256 input, uint256 leafStart, uint256 leafEnd);
    /// @notice A per-channel (mult, shift) row is outside mult in [0, 2^31-1], shift in [1, 62]
    ///         (the weights loader rejects such tables, so no honest result uses one).
    error Int8Verifier_BadChannelParams(int256 mult, int256 shift);
}
