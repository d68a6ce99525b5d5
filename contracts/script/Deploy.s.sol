// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Script} from "forge-std/Script.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {IWorkerRegistry} from "../src/interfaces/IWorkerRegistry.sol";
import {IJobMarket} from "../src/interfaces/IJobMarket.sol";
import {DisputeGame} from "../src/dispute/DisputeGame.sol";
import {Int8Verifier} from "../src/dispute/Int8Verifier.sol";
import {IOneStepVerifier} from "../src/dispute/IOneStepVerifier.sol";
import {Constants} from "../src/libraries/Constants.sol";

/// @title Deploy
/// @notice Deploys WorkerRegistry, JobMarket, the Int8Verifier one-step referee and the dispute
///         game, wired to each other through immutable constructor arguments (no owner, no
///         setter). The addresses are predicted from the deployer's nonce: registry at nonce n,
///         market at n + 1, verifier at n + 2, dispute game at n + 3.
/// @dev Environment: GPUMESH_DEPLOYER_KEY (required; read from the environment so that it never
///      appears in a process listing), GPUMESH_UNBONDING_DELAY (seconds, default 7 days),
///      GPUMESH_GAME_CLOCK (seconds per side of a dispute's chess clock, default
///      Constants.GAME_CLOCK_SECONDS = 3.5 days), GPUMESH_MIN_BOND (wei, the market's absolute floor
///      of a job's dispute bond, default DEFAULT_MIN_BOND: a whole defence, ~0.75M gas, at 13 gwei).
///      `gpumesh.client.chain.deploy` runs this with --broadcast and reads the returned addresses
///      from the broadcast record.
contract Deploy is Script {
    uint64 internal constant DEFAULT_UNBONDING_DELAY = 7 days;
    uint96 internal constant DEFAULT_MIN_BOND = 0.01 ether;

    error Deploy_AddressMismatch(string what, address predicted, address actual);

    function run() external returns (address registry, address market, address disputeGame, address verifier) {
        uint256 key = vm.envUint("GPUMESH_DEPLOYER_KEY");
        uint64 unbondingDelay = uint64(vm.envOr("GPUMESH_UNBONDING_DELAY", uint256(DEFAULT_UNBONDING_DELAY)));
        uint64 gameClock = uint64(vm.envOr("GPUMESH_GAME_CLOCK", uint256(Constants.GAME_CLOCK_SECONDS)));
        uint96 minBond = uint96(vm.envOr("GPUMESH_MIN_BOND", uint256(DEFAULT_MIN_BOND)));
        address deployer = vm.addr(key);
        uint64 nonce = vm.getNonce(deployer);
        address predictedRegistry = vm.computeCreateAddress(deployer, nonce);
        address predictedMarket = vm.computeCreateAddress(deployer, nonce + 1);
        address predictedGame = vm.computeCreateAddress(deployer, nonce + 3);

        vm.startBroadcast(key);
        registry = address(new WorkerRegistry(predictedMarket, unbondingDelay));
        market = address(new JobMarket(IWorkerRegistry(registry), predictedGame, minBond));
        verifier = address(new Int8Verifier());
        disputeGame = address(
            new DisputeGame(IJobMarket(market), IOneStepVerifier(verifier), Constants.SPLIT_BITS, gameClock)
        );
        vm.stopBroadcast();

        if (registry != predictedRegistry) revert Deploy_AddressMismatch("registry", predictedRegistry, registry);
        if (market != predictedMarket) revert Deploy_AddressMismatch("market", predictedMarket, market);
        if (disputeGame != predictedGame) revert Deploy_AddressMismatch("disputeGame", predictedGame, disputeGame);
    }
}
