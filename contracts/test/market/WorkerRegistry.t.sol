// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MarketBase} from "./MarketBase.t.sol";
import {IWorkerRegistry} from "../../src/interfaces/IWorkerRegistry.sol";

contract Rejecter {
    function stakeAndUnstake(IWorkerRegistry r, uint96 a) external payable {
        r.stake{value: msg.value}();
        r.requestUnstake(a);
    }

    function withdraw(IWorkerRegistry r) external {
        r.withdraw();
    }
}

contract WorkerRegistryTest is MarketBase {
    function test_Stake_AddsAndEmits() public {
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.Staked(worker, 3 ether, 3 ether);
        _stake(worker, 3 ether);
        _stake(worker, 1 ether);
        assertEq(registry.stakeOf(worker).total, 4 ether);
        assertEq(registry.freeStake(worker), 4 ether);
        assertEq(address(registry).balance, 4 ether);
    }

    function test_RevertWhen_StakeZero() public {
        vm.expectRevert(IWorkerRegistry.WorkerRegistry_ZeroAmount.selector);
        _stake(worker, 0);
    }

    function test_RevertWhen_StakeAboveUint96() public {
        uint256 big = uint256(type(uint96).max) + 1;
        vm.deal(worker, big);
        vm.expectRevert(abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_AmountTooLarge.selector, big));
        _stake(worker, big);
    }

    function test_RequestUnstake_MovesToUnbonding() public {
        _stake(worker, 3 ether);
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.UnstakeRequested(worker, 1 ether, 1 ether, uint64(block.timestamp + UNBONDING));
        vm.prank(worker);
        registry.requestUnstake(1 ether);
        IWorkerRegistry.StakeInfo memory s = registry.stakeOf(worker);
        assertEq(s.total, 2 ether);
        assertEq(s.unbonding, 1 ether);
        assertEq(s.unbondingReadyAt, block.timestamp + UNBONDING);
    }

    function test_RevertWhen_RequestUnstakeZero() public {
        vm.expectRevert(IWorkerRegistry.WorkerRegistry_ZeroAmount.selector);
        vm.prank(worker);
        registry.requestUnstake(0);
    }

    function test_RevertWhen_RequestUnstakeLockedStake() public {
        _claimed(); // locks STAKE of STAKE
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_InsufficientFreeStake.selector, worker, 0, 1)
        );
        vm.prank(worker);
        registry.requestUnstake(1);
    }

    function test_Withdraw_AfterUnbondingDelay() public {
        _stake(worker, 3 ether);
        vm.prank(worker);
        registry.requestUnstake(1 ether);
        uint64 ready = uint64(block.timestamp + UNBONDING);
        vm.warp(ready - 1);
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_NothingToWithdraw.selector, worker, 1 ether, ready)
        );
        vm.prank(worker);
        registry.withdraw();
        vm.warp(ready);
        uint256 before = worker.balance;
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.Withdrawn(worker, 1 ether);
        vm.prank(worker);
        assertEq(registry.withdraw(), 1 ether);
        assertEq(worker.balance, before + 1 ether);
        assertEq(registry.stakeOf(worker).unbonding, 0);
        assertEq(address(registry).balance, 2 ether);
    }

    function test_RequestUnstake_RestartsDelay() public {
        _stake(worker, 3 ether);
        vm.prank(worker);
        registry.requestUnstake(1 ether);
        vm.warp(block.timestamp + UNBONDING - 1);
        vm.prank(worker);
        registry.requestUnstake(1 ether);
        vm.warp(block.timestamp + 1);
        vm.expectRevert();
        vm.prank(worker);
        registry.withdraw();
    }

    function test_RevertWhen_WithdrawNothing() public {
        vm.expectRevert(abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_NothingToWithdraw.selector, other, 0, 0));
        vm.prank(other);
        registry.withdraw();
    }

    function test_RevertWhen_WithdrawToRejectingContract() public {
        Rejecter r = new Rejecter();
        r.stakeAndUnstake{value: 1 ether}(registry, 1 ether);
        vm.warp(block.timestamp + UNBONDING);
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_TransferFailed.selector, address(r), 1 ether)
        );
        r.withdraw(registry);
        assertEq(registry.stakeOf(address(r)).unbonding, 1 ether, "unbonding kept after a failed payout");
    }

    function test_SetCapabilities_StoresAndEmits() public {
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.CapabilitiesPublished(worker, "bafycap");
        vm.prank(worker);
        registry.setCapabilities("bafycap");
        assertEq(registry.capabilities(worker), "bafycap");
    }

    function test_RevertWhen_MarketOnlyCalledByOther() public {
        bytes memory err = abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_NotMarket.selector, other);
        vm.startPrank(other);
        vm.expectRevert(err);
        registry.lock(worker, 1);
        vm.expectRevert(err);
        registry.unlock(worker, 1);
        vm.expectRevert(err);
        registry.slash(worker, 1, 1, other, 0);
        vm.stopPrank();
    }

    function test_RevertWhen_UnlockMoreThanLocked() public {
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_InsufficientLockedStake.selector, worker, 0, 1)
        );
        vm.prank(address(market));
        registry.unlock(worker, 1);
    }

    function test_RevertWhen_SlashMoreThanLocked() public {
        _stake(worker, 5);
        vm.startPrank(address(market));
        registry.lock(worker, 3);
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_InsufficientLockedStake.selector, worker, 3, 4)
        );
        registry.slash(worker, 4, 1, other, 0);
        vm.expectRevert(
            abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_InsufficientLockedStake.selector, worker, 3, 3)
        );
        registry.slash(worker, 2, 3, other, 0);
        vm.expectRevert(abi.encodeWithSelector(IWorkerRegistry.WorkerRegistry_PaidAboveSlash.selector, 2, 3));
        registry.slash(worker, 3, 2, other, 3);
        vm.stopPrank();
    }

    function test_Slash_PaysTheMarketsShareBurnsTheRest() public {
        _stake(worker, 10);
        vm.startPrank(address(market));
        registry.lock(worker, 8);
        vm.expectEmit(address(registry));
        emit IWorkerRegistry.StakeSlashed(worker, other, 6, 2, 4);
        assertEq(registry.slash(worker, 8, 6, other, 4), 2);
        vm.stopPrank();
        assertEq(registry.credits(other), 4);
        assertEq(registry.totalBurned(), 2);
        assertEq(registry.stakeOf(worker).total, 4);
        assertEq(registry.stakeOf(worker).locked, 0);
    }

    function test_Views() public view {
        assertEq(registry.market(), address(market));
        assertEq(registry.unbondingDelay(), UNBONDING);
    }
}
