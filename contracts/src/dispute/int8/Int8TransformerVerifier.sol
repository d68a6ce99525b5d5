// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "../IOneStepVerifier.sol";
import {Int8StepBase} from "./Int8StepBase.sol";
import {LibDescriptor as LD} from "./LibDescriptor.sol";
import {LibInt8Ops} from "./LibInt8Ops.sol";
import {LibTransformer} from "./LibTransformer.sol";

/// @title Int8TransformerVerifier
/// @notice The one-step of the integer transformer ops 0x0F-0x16 (matmul, lut, mul, gather, softmax, layernorm, rope, topk;
///         docs/protocol.md 2.2, 5.7): the same descriptor decoding, element checks and `proofs`
///         layout as Int8Verifier (Int8StepBase), with LibTransformer's rules and semantics.
///         Created by Int8Verifier's constructor, which forwards these opcodes to it (5.7.1).
/// @dev Stateless. Gather's table byte depends on the id: the blob holds the id's range (input 0)
///      first, then, for an id in [0, V), the table range (input 1) that id selects.
contract Int8TransformerVerifier is IOneStepVerifier, Int8StepBase {
    /// @notice Decode and fully validate a 0x0F-0x16 descriptor; its output's byte length.
    function validateDescriptor(bytes calldata descriptor) external pure returns (uint256) {
        return LD.nbytes(_decode(descriptor).out);
    }

    /// @inheritdoc IOneStepVerifier
    function outputBytes(bytes calldata descriptor) external pure returns (uint256) {
        return LD.declaredOutputBytes(descriptor);
    }

    /// @inheritdoc IOneStepVerifier
    function verify(
        OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external pure returns (bool workerCorrect) {
        LD.Desc memory D = _decode(descriptor);
        int256 worker = _workerElement(ctx, D, elementIndex, leaf);
        LibInt8Ops.Range[] memory r = LibTransformer.ranges(D, elementIndex);
        uint256 cur = _open(ctx, D, r, proofs, 0);
        if (D.opcode == LD.OP_GATHER) {
            // the table byte depends on the id just opened (none for an id outside [0, V))
            r = LibTransformer.gatherRow(D, elementIndex, r[0].ptr);
            cur = _open(ctx, D, r, proofs, cur);
        }
        _end(proofs, cur);
        return worker == LibTransformer.compute(D, elementIndex, r);
    }

    function _decode(bytes calldata descriptor) private pure returns (LD.Desc memory D) {
        D = LD.decodeFields(descriptor);
        LibTransformer.check(D);
    }
}
