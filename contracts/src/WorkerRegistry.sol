// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IWorkerRegistry} from "./interfaces/IWorkerRegistry.sol";

/// @title WorkerRegistry
/// @notice Holds worker stakes. A worker's active stake (`total`) is split into free and locked
///         (locked by the job market on claim); unstaking moves free stake into unbonding, which is
///         withdrawable after `unbondingDelay`. Only the market locks, unlocks and slashes, and the
///         market slashes only on a missed execution deadline or on a lost dispute game, and decides
///         how much of a slash is paid out; the rest is burned (kept here, unwithdrawable).
/// @dev No owner: the market address is fixed at deployment (predicted by Deploy.s.sol).
///      INVARIANT (accounting): address(this).balance ==
///        sum(total) + sum(unbonding) + sum(credits) + totalBurned   (+ forced ETH, never counted).
contract WorkerRegistry is IWorkerRegistry {
    /// @inheritdoc IWorkerRegistry
    address public immutable market;
    /// @inheritdoc IWorkerRegistry
    uint64 public immutable unbondingDelay;

    mapping(address worker => StakeInfo) internal _stakes;
    /// @inheritdoc IWorkerRegistry
    mapping(address account => uint256) public credits;
    mapping(address worker => string) internal _capabilities;
    /// @inheritdoc IWorkerRegistry
    uint256 public totalBurned;

    modifier onlyMarket() {
        if (msg.sender != market) revert WorkerRegistry_NotMarket(msg.sender);
        _;
    }

    /// @param market_ The JobMarket (its predicted address: it is deployed after this contract).
    /// @param unbondingDelay_ Seconds between requestUnstake and withdraw.
    constructor(address market_, uint64 unbondingDelay_) {
        market = market_;
        unbondingDelay = unbondingDelay_;
    }

    // ================================================================ worker

    /// @inheritdoc IWorkerRegistry
    function stake() external payable {
        if (msg.value == 0) revert WorkerRegistry_ZeroAmount();
        StakeInfo storage s = _stakes[msg.sender];
        uint256 total = uint256(s.total) + msg.value;
        if (total > type(uint96).max) revert WorkerRegistry_AmountTooLarge(total);
        // forge-lint: disable-next-line(unsafe-typecast) -- bounded by the check just above
        s.total = uint96(total);
        emit Staked(msg.sender, msg.value, total);
    }

    /// @inheritdoc IWorkerRegistry
    function requestUnstake(uint96 amount) external {
        if (amount == 0) revert WorkerRegistry_ZeroAmount();
        StakeInfo storage s = _stakes[msg.sender];
        uint96 free = s.total - s.locked; // INVARIANT: locked <= total
        if (amount > free) revert WorkerRegistry_InsufficientFreeStake(msg.sender, free, amount);
        s.total -= amount;
        // unbonding <= sum of stakes ever made, which fit uint96 (checked in stake)
        s.unbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnstakeRequested(msg.sender, amount, s.unbonding, readyAt);
    }

    /// @inheritdoc IWorkerRegistry
    function withdraw() external returns (uint256 amount) {
        StakeInfo storage s = _stakes[msg.sender];
        amount = credits[msg.sender];
        credits[msg.sender] = 0;
        if (s.unbonding != 0 && block.timestamp >= s.unbondingReadyAt) {
            amount += s.unbonding;
            s.unbonding = 0;
        }
        if (amount == 0) revert WorkerRegistry_NothingToWithdraw(msg.sender, s.unbonding, s.unbondingReadyAt);
        emit Withdrawn(msg.sender, amount);
        // SAFETY: checks-effects-interactions; every balance was zeroed above, so re-entry finds nothing.
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert WorkerRegistry_TransferFailed(msg.sender, amount);
    }

    /// @inheritdoc IWorkerRegistry
    function setCapabilities(string calldata capabilityCid) external {
        _capabilities[msg.sender] = capabilityCid;
        emit CapabilitiesPublished(msg.sender, capabilityCid);
    }

    // ================================================================ market only

    /// @inheritdoc IWorkerRegistry
    function lock(address worker, uint96 amount) external onlyMarket {
        StakeInfo storage s = _stakes[worker];
        uint96 locked = s.locked;
        uint96 free = s.total - locked;
        if (amount > free) revert WorkerRegistry_InsufficientFreeStake(worker, free, amount);
        locked += amount;
        s.locked = locked;
        emit StakeLocked(worker, amount, locked);
    }

    /// @inheritdoc IWorkerRegistry
    function unlock(address worker, uint96 amount) external onlyMarket {
        StakeInfo storage s = _stakes[worker];
        uint96 locked = s.locked;
        if (amount > locked) revert WorkerRegistry_InsufficientLockedStake(worker, locked, amount);
        locked -= amount;
        s.locked = locked;
        emit StakeUnlocked(worker, amount, locked);
    }

    /// @inheritdoc IWorkerRegistry
    function slash(address worker, uint96 locked, uint96 amount, address beneficiary, uint96 paid)
        external
        onlyMarket
        returns (uint256 burned)
    {
        StakeInfo storage s = _stakes[worker];
        uint96 lockedNow = s.locked;
        // SAFETY: only stake locked for the job can be taken, never free or unbonding stake.
        if (locked > lockedNow || amount > locked) {
            revert WorkerRegistry_InsufficientLockedStake(worker, lockedNow, locked > lockedNow ? locked : amount);
        }
        if (paid > amount) revert WorkerRegistry_PaidAboveSlash(amount, paid);
        s.locked = lockedNow - locked;
        s.total -= amount; // INVARIANT: amount <= locked <= total
        burned = amount - paid;
        totalBurned += burned;
        if (paid != 0) credits[beneficiary] += paid;
        emit StakeUnlocked(worker, locked, lockedNow - locked);
        emit StakeSlashed(worker, beneficiary, amount, burned, paid);
    }

    // ================================================================ views

    /// @inheritdoc IWorkerRegistry
    function stakeOf(address worker) external view returns (StakeInfo memory) {
        return _stakes[worker];
    }

    /// @inheritdoc IWorkerRegistry
    function freeStake(address worker) external view returns (uint256) {
        StakeInfo storage s = _stakes[worker];
        return s.total - s.locked;
    }

    /// @inheritdoc IWorkerRegistry
    function capabilities(address worker) external view returns (string memory) {
        return _capabilities[worker];
    }
}
