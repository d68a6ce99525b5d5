// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Script} from "forge-std/Script.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {IWorkerRegistry} from "../src/interfaces/IWorkerRegistry.sol";

/// @title Deploy
/// @notice Deploys WorkerRegistry, JobMarket and the dispute game, wired to each other through
///         immutable constructor arguments (no owner, no setter). The addresses are predicted from
///         the deployer's nonce: registry at nonce n, market at n + 1, dispute game at n + 2.
/// @dev Environment: GPUMESH_DEPLOYER_KEY (required; read from the environment so that it never
///      appears in a process listing), GPUMESH_UNBONDING_DELAY (seconds, default 7 days).
///      `gpumesh.client.chain.deploy` runs this with --broadcast and reads the returned addresses
///      from the broadcast record.
contract Deploy is Script {
    uint64 internal constant DEFAULT_UNBONDING_DELAY = 7 days;

    error Deploy_AddressMismatch(string what, address predicted, address actual);

    /// @dev Set by run() before any deployment; read by _deployDisputeGame.
    address internal _predictedGame;

    function run() external returns (address registry, address market, address disputeGame) {
        uint256 key = vm.envUint("GPUMESH_DEPLOYER_KEY");
        uint64 unbondingDelay = uint64(vm.envOr("GPUMESH_UNBONDING_DELAY", uint256(DEFAULT_UNBONDING_DELAY)));
        address deployer = vm.addr(key);
        uint64 nonce = vm.getNonce(deployer);
        address predictedRegistry = vm.computeCreateAddress(deployer, nonce);
        address predictedMarket = vm.computeCreateAddress(deployer, nonce + 1);
        address predictedGame = vm.computeCreateAddress(deployer, nonce + 2);
        _predictedGame = predictedGame;

        vm.startBroadcast(key);
        registry = address(new WorkerRegistry(predictedMarket, unbondingDelay));
        market = address(new JobMarket(IWorkerRegistry(registry), predictedGame));
        disputeGame = _deployDisputeGame(market, registry);
        vm.stopBroadcast();

        if (registry != predictedRegistry) revert Deploy_AddressMismatch("registry", predictedRegistry, registry);
        if (market != predictedMarket) revert Deploy_AddressMismatch("market", predictedMarket, market);
        if (disputeGame != predictedGame) revert Deploy_AddressMismatch("disputeGame", predictedGame, disputeGame);
    }

    /// @dev The dispute game (contracts/src/dispute/DisputeGame.sol) is being written separately.
    ///      Until it lands this deploys NOTHING and returns the predicted address, so the market and
    ///      registry work for everything except disputes (the hooks revert for every caller, since no
    ///      code can ever sit at that address except the game deployed from nonce n + 2). When the
    ///      game exists, replace the body with `return address(new DisputeGame(market, registry));`
    ///      (the address check in run() then proves the wiring).
    function _deployDisputeGame(address market, address registry) internal returns (address) {
        market;
        registry;
        return _predictedGame;
    }
}
