// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "../../src/dispute/IOneStepVerifier.sol";

/// @notice Bench helper (bench/bench_onestep_gas.py): the gas a contract pays for one
///         IOneStepVerifier.verify call (call overhead, argument copy and execution), without
///         the transaction's base and calldata costs — what DisputeGame.step pays for its verdict.
contract GasProbe {
    function measure(
        IOneStepVerifier v,
        IOneStepVerifier.OneStepContext calldata ctx,
        bytes calldata descriptor,
        uint256 elementIndex,
        bytes calldata leaf,
        bytes calldata proofs
    ) external view returns (uint256 gasUsed, bool workerCorrect) {
        uint256 g = gasleft();
        workerCorrect = v.verify(ctx, descriptor, elementIndex, leaf, proofs);
        gasUsed = g - gasleft();
    }
}
