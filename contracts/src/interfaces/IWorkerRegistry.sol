// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IWorkerRegistry
/// @notice Worker stakes: free + locked == active stake; unstaking waits an unbonding delay; only the
///         job market locks, unlocks and slashes. Payments are pulled with `withdraw`.
interface IWorkerRegistry {
    // ---------------------------------------------------------------- errors
    /// @notice A market-only function was called by `caller`.
    error WorkerRegistry_NotMarket(address caller);
    /// @notice `stake` with no value.
    error WorkerRegistry_ZeroAmount();
    /// @notice The stake would not fit the uint96 accounting.
    error WorkerRegistry_AmountTooLarge(uint256 amount);
    /// @notice `worker` has `free` unlocked stake but `needed` was asked for.
    error WorkerRegistry_InsufficientFreeStake(address worker, uint256 free, uint256 needed);
    /// @notice The market asked to release more than `worker` has locked (a market bug if ever seen).
    error WorkerRegistry_InsufficientLockedStake(address worker, uint256 locked, uint256 needed);
    /// @notice Nothing is withdrawable now; `unbonding` becomes withdrawable at `readyAt`.
    error WorkerRegistry_NothingToWithdraw(address account, uint256 unbonding, uint64 readyAt);
    /// @notice The ETH transfer to `to` failed.
    error WorkerRegistry_TransferFailed(address to, uint256 amount);
    /// @notice slash was asked to pay out more than it takes.
    error WorkerRegistry_PaidAboveSlash(uint256 amount, uint256 paid);

    // ---------------------------------------------------------------- events
    event Staked(address indexed worker, uint256 amount, uint256 totalStake);
    event UnstakeRequested(address indexed worker, uint256 amount, uint256 unbonding, uint64 readyAt);
    event Withdrawn(address indexed account, uint256 amount);
    event StakeLocked(address indexed worker, uint256 amount, uint256 lockedStake);
    event StakeUnlocked(address indexed worker, uint256 amount, uint256 lockedStake);
    event StakeSlashed(
        address indexed worker, address indexed beneficiary, uint256 amount, uint256 burned, uint256 paid
    );
    event CapabilitiesPublished(address indexed worker, string capabilityCid);

    /// @notice One worker's stake. `total` counts free + locked; unbonding stake is no longer in it.
    struct StakeInfo {
        uint96 total;
        uint96 locked;
        uint96 unbonding;
        uint64 unbondingReadyAt;
    }

    // ---------------------------------------------------------------- worker
    /// @notice Add msg.value to the caller's stake.
    function stake() external payable;
    /// @notice Move `amount` of free stake into unbonding; it (and anything unbonding before) becomes
    ///         withdrawable after the unbonding delay, counted from this call.
    function requestUnstake(uint96 amount) external;
    /// @notice Pay out the caller's unbonded stake (if ready) and credits (slash rewards).
    function withdraw() external returns (uint256 amount);
    /// @notice Publish the IPFS CID of the caller's capability document (GPUs, VRAM, driver).
    function setCapabilities(string calldata capabilityCid) external;

    // ---------------------------------------------------------------- market only
    /// @notice Lock `amount` of `worker`'s free stake for a job.
    function lock(address worker, uint96 amount) external;
    /// @notice Release `amount` of `worker`'s locked stake.
    function unlock(address worker, uint96 amount) external;
    /// @notice Release `locked` of `worker`'s locked stake and take `amount` (<= locked) of it:
    ///         `paid` (<= amount) is credited to `beneficiary`, the rest stays burned in this contract.
    ///         The market decides the split (docs/protocol.md 4.11).
    function slash(address worker, uint96 locked, uint96 amount, address beneficiary, uint96 paid)
        external
        returns (uint256 burned);

    // ---------------------------------------------------------------- views
    function market() external view returns (address);
    function unbondingDelay() external view returns (uint64);
    function stakeOf(address worker) external view returns (StakeInfo memory);
    function freeStake(address worker) external view returns (uint256);
    function credits(address account) external view returns (uint256);
    function capabilities(address worker) external view returns (string memory);
    function totalBurned() external view returns (uint256);
}
