// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "./IOneStepVerifier.sol";
import {LibDescriptor as LD} from "./int8/LibDescriptor.sol";
import {LibInt8Ops} from "./int8/LibInt8Ops.sol";
import {Int8StepBase} from "./int8/Int8StepBase.sol";
import {Int8TransformerVerifier} from "./int8/Int8TransformerVerifier.sol";

/// @title Int8Verifier
/// @notice The one-step referee of the int8 op set (docs/protocol.md section 5.7): decodes the disputed
///         op's descriptor (docs/protocol.md section 3), derives the input byte ranges the element reads
///         (docs/protocol.md section 2, as gpumesh.client.core.ops.reference), checks each against the
///         agreed commitments with a LibMerkle range proof, recomputes the element with the
///         runtime's exact integer semantics and compares it with the worker's revealed value.
/// @dev Stateless, no constructor arguments. `proofs` layout (docs/protocol.md 5.7.3; Python
///      encoder gpumesh.node.dispute.int8_prover): for each input the element reads, in input
///      order: slotRoot (32) || rootPath (32 each) || per range of that input: leaves (LEAF_BYTES
///      each) || range siblings (32 each). Every length follows from the descriptor and the
///      context, so the blob carries no length fields and must be consumed exactly.
///      Opcodes 0x0F-0x16 (the integer transformer ops) are verified by a second contract,
///      Int8TransformerVerifier, that this one deploys in its constructor and forwards those
///      descriptors to (a staticcall; its reverts bubble up unchanged), so that the runtime code
///      of each stays under EIP-170 (docs/protocol.md 5.7.1). The views 0x17-0x18 (concat, slice)
///      run here: their step is transpose's index walk (LibInt8Ops._viewSource).
contract Int8Verifier is IOneStepVerifier, Int8StepBase {
    /// @notice The verifier of opcodes 0x0F-0x16, created by the constructor (no owner, no setter).
    Int8TransformerVerifier public immutable TRANSFORMER_VERIFIER;

    constructor() {
        TRANSFORMER_VERIFIER = new Int8TransformerVerifier();
    }

    /// @dev A descriptor of opcode 0x0F-0x16: validated and verified by TRANSFORMER_VERIFIER.
    function _isTransformer(bytes calldata d) private pure returns (bool) {
        return d.length >= 2 && uint8(d[0]) >= LD.OP_MATMUL && uint8(d[0]) <= LD.OP_TOPK;
    }

    /// @inheritdoc IOneStepVerifier
    /// @dev Light decoding (LibDescriptor.declaredOutputBytes): length, opcode and the declared
    ///      output type only; the full validation runs once, in `verify`. Safe because the game
    ///      proved the descriptor against the ops root first, and a descriptor that fails the full
    ///      validation makes every `verify` of its op revert, so the challenger can never win at
    ///      that op: exactly the outcome it had when proveOp itself reverted (docs/protocol.md 5.7.2).
    ///      On every descriptor that passes it, the value equals `validateDescriptor`'s.
    function outputBytes(bytes calldata descriptor) external pure returns (uint256) {
        return LD.declaredOutputBytes(descriptor);
    }

    /// @notice Decode and fully validate `descriptor` exactly as `verify` does first (the twin of
    ///         the Python OpDescriptor.decode + check_descriptor); its output's byte length.
    /// @dev Reverts Int8Verifier_BadDescriptor(reason) on any rule the Python validator enforces.
    ///      Off-chain pre-check and test entry point; the game does not call it.
    function validateDescriptor(bytes calldata descriptor) external view returns (uint256) {
        if (_isTransformer(descriptor)) return TRANSFORMER_VERIFIER.validateDescriptor(descriptor);
        return LD.nbytes(LD.decode(descriptor).out);
    }

    /// @inheritdoc IOneStepVerifier
    function verify(
        OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external view returns (bool workerCorrect) {
        if (_isTransformer(descriptor)) {
            return TRANSFORMER_VERIFIER.verify(ctx, descriptor, elementIndex, leaf, proofs);
        }
        LD.Desc memory D = LD.decode(descriptor);
        int256 worker = _workerElement(ctx, D, elementIndex, leaf);
        LibInt8Ops.Range[] memory r = LibInt8Ops.ranges(D, elementIndex);
        _end(proofs, _open(ctx, D, r, proofs, 0));
        return worker == LibInt8Ops.compute(D, elementIndex, r);
    }
}
