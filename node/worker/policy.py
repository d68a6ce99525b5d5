"""The worker's acceptance policy: which Open jobs it is willing to claim, beyond "can this machine
run it at all". Pure (numbers in, a verdict out); the worker daemon (gpumesh.node.worker.node)
calls `judge` twice per job: before downloading its data (`estimate=None`: reward, stake and bond
rules) and after timing one pass of the job's program on this worker's executor (the time rules).

Why each rule exists (issue #12, docs/roles/worker.md "Acceptance policy"):
- `min_reward`: the operator's price floor.
- `max_stake_ratio`: claiming locks `requiredStake`, and a missed execution deadline slashes part of
  it to the poster. A job asking a large stake for a tiny reward is the shape of a stake-drain
  attack (a 1-wei job locking all the worker's free stake); an honest poster has no reason to ask
  more than `max_stake_ratio` times what it pays.
- `max_defence_gas` x gas price vs the bond: a challenger opens a game by posting `disputeBond`;
  the worker pays the gas of its side of the game (about 12 moves, docs/protocol.md 5.6), and when
  the challenger loses the worker is credited the bond less the burned share (`BOND_BURN_BPS`). A
  bond whose payout does not cover the defence lets an accomplice bleed the worker's gas with many
  cheap games, so such jobs are refused.
- `safety_factor` and `time_margin`: `executionTime` must cover this machine's measured run time
  with room to spare (see `Policy`), plus the work of jobs already claimed (they share the
  executor tick by tick), else the execution deadline passes and the stake is slashed by expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from gpumesh.client.chain.types import Job, format_eth
from gpumesh.client.core.game import bond_burn

#: Refusal reasons (also the suffix of the metric `jobs_refused_<reason>`).
LOW_REWARD = "low_reward"
STAKE_RATIO = "stake_ratio"
LOW_BOND = "low_bond"
SHORT_EXECUTION_TIME = "short_execution_time"
BUSY_DEADLINE = "busy_deadline"
#: Reasons the daemon gives outside `judge` (the machine cannot run the job at all).
TOO_MANY_UNITS = "too_many_units"
GPU_MEMORY = "gpu_memory"

#: Gas of the worker's side of one whole dispute game, rounded up with margin: the reference game
#: of docs/protocol.md 5.6 (1,024 units x 1,024 ops x 64 MiB outputs, the real Int8Verifier) costs
#: the worker 10 reveals (<= 62,507 each) + commitTrace 72,719 + revealLeaf 65,267 = 763,056 gas at
#: most; each extra tree level (deeper trees) adds a reveal of ~63k every k = 4 levels. 1M leaves
#: ~30% for deeper trees and gas-price movement between the claim and the game.
DEFAULT_MAX_DEFENCE_GAS = 1_000_000


@dataclass(frozen=True)
class Policy:
    """Operator settings of the acceptance policy (CLI flags / [worker] config keys).

    Defaults: `safety_factor` 3 because the estimate is one pass on an idle executor while the real
    run shares the machine with the daemon's other jobs, disk writes of every step and other load,
    and clocks on a busy or thermally throttled GPU vary by well over 2x; `time_margin` 60 s for
    what the estimate does not time: the claim and submit transactions (a few blocks each on a
    congested chain), uploading the outputs to IPFS, and the daemon's polling interval.
    `max_stake_ratio` 100: stake at most 100x the reward."""

    min_reward: int = 0  # wei
    max_stake_ratio: float = 100.0  # requiredStake / reward
    max_defence_gas: int = DEFAULT_MAX_DEFENCE_GAS
    gas_price: int | None = None  # wei per gas for the bond rule; None: the node's eth_gasPrice
    safety_factor: float = 3.0
    time_margin: float = 60.0  # seconds

    def __post_init__(self) -> None:
        if self.min_reward < 0:
            raise ValueError("min_reward must be >= 0")
        if not self.max_stake_ratio > 0:
            raise ValueError("max_stake_ratio must be > 0")
        if self.max_defence_gas < 0:
            raise ValueError("max_defence_gas must be >= 0")
        if self.gas_price is not None and self.gas_price < 0:
            raise ValueError("gas_price must be >= 0")
        if not self.safety_factor >= 1:
            raise ValueError("safety_factor must be >= 1 (a deadline shorter than the measured run time is lost)")
        if not self.time_margin >= 0:
            raise ValueError("time_margin must be >= 0")


@dataclass(frozen=True)
class Refusal:
    """Why a job is not claimed: `reason` a short key (metrics, status), `detail` one line for people."""

    reason: str
    detail: str


def bond_payout(bond: int) -> int:
    """What the worker is credited when a challenger loses: the bond less the burned share
    (`BOND_BURN_BPS`, rounded up as the contract does)."""
    return bond - bond_burn(bond)


def defence_cost(policy: Policy, gas_price: int) -> int:
    """Wei the worker pays to play its side of one whole game at `gas_price`."""
    return policy.max_defence_gas * gas_price


def time_needed(policy: Policy, estimate: float, backlog: float = 0.0) -> float:
    """Seconds of execution time a job needs: the work ahead of it and its own, times the safety
    factor, plus the margin."""
    return policy.safety_factor * (estimate + backlog) + policy.time_margin


def judge(job: Job, estimate: float | None, gas_price: int, policy: Policy, *, backlog: float = 0.0,
          time_left: float | None = None) -> Refusal | None:
    """None if the policy accepts `job`, else the first rule it breaks.

    `estimate`: seconds this worker needs to execute all the job's units (None: not measured yet,
    the time rules are skipped). `gas_price`: wei per gas for the bond rule. `backlog`: estimated
    seconds of work left in the jobs this worker already claimed. `time_left`: seconds between the
    claim and the execution deadline (default `job.execution_time`: the contract sets the deadline
    to the claim's block time + executionTime)."""
    if job.reward < policy.min_reward:
        return Refusal(LOW_REWARD, f"reward {format_eth(job.reward)} is below this worker's minimum "
                                   f"{format_eth(policy.min_reward)}")
    if job.reward <= 0 or Fraction(job.required_stake, job.reward) > Fraction(policy.max_stake_ratio):
        return Refusal(STAKE_RATIO, f"required stake {format_eth(job.required_stake)} is over "
                                    f"{policy.max_stake_ratio:g}x the reward {format_eth(job.reward)}")
    cost = defence_cost(policy, gas_price)
    if bond_payout(job.dispute_bond) < cost:
        return Refusal(LOW_BOND, f"dispute bond {format_eth(job.dispute_bond)} pays the worker "
                                 f"{format_eth(bond_payout(job.dispute_bond))} when a challenger loses, less than "
                                 f"defending costs ({policy.max_defence_gas} gas at {gas_price} wei = {format_eth(cost)})")
    if estimate is None:
        return None
    left = job.execution_time if time_left is None else time_left
    if left < time_needed(policy, estimate):
        return Refusal(SHORT_EXECUTION_TIME, f"execution time {left:g}s is under {time_needed(policy, estimate):.0f}s "
                                             f"({policy.safety_factor:g} x this worker's estimate {estimate:.3g}s + "
                                             f"{policy.time_margin:g}s)")
    if left < time_needed(policy, estimate, backlog):
        return Refusal(BUSY_DEADLINE, f"execution time {left:g}s is under {time_needed(policy, estimate, backlog):.0f}s "
                                      f"with the {backlog:.3g}s of work already claimed ahead of it "
                                      f"({policy.safety_factor:g} x ({estimate:.3g}s + {backlog:.3g}s) + "
                                      f"{policy.time_margin:g}s)")
    return None


def claim_delay(stagger: float, job: Job, estimate: float, policy: Policy) -> float:
    """Seconds to wait before claiming an accepted job: `stagger` times the share of the job's
    executionTime this worker needs (`time_needed`, capped at 1). Workers race for an Open job by
    claiming it; with this delay the ones that need the least of its time (faster GPUs, a shorter
    backlog of their own) claim first, and a slower one that re-reads the job before claiming finds
    it taken and sends nothing. 0 when `stagger` is 0."""
    if stagger <= 0:
        return 0.0
    share = time_needed(policy, estimate) / max(1, job.execution_time)
    return stagger * min(1.0, share)
