"""The pure arithmetic of bench/bench_market.py: percentiles, gas per shard, the chain's bound and a
machine's capacity (the figures the scale benchmark's verdict rests on)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[3] / "bench" / "bench_market.py"
_spec = importlib.util.spec_from_file_location("bench_market", _PATH)
bm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bm)


def test_percentile_interpolates_between_ranks_like_numpy():
    np = pytest.importorskip("numpy")
    xs = [7.0, 1.0, 3.0, 10.0, 4.0, 4.0, 2.0]
    for q in (0, 5, 25, 50, 90, 95, 100):
        assert bm.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert bm.percentile([5.0], 95) == 5.0
    assert bm.percentile([], 50) is None
    with pytest.raises(ValueError):
        bm.percentile(xs, 101)


def test_gas_per_shard_is_post_share_plus_each_step():
    steps = {"claimJob": 60_000, "submitResult": 80_000, "finalizeJob": 40_000, "withdraw": 30_000}
    # 2 postJobs of 10 shards, 1.2M gas each: 120k per shard; withdraw is not a shard step
    assert bm.gas_per_shard(2_400_000, 20, steps) == 120_000 + 180_000
    with pytest.raises(ValueError, match="finalizeJob"):
        bm.gas_per_shard(1, 1, {"claimJob": 1, "submitResult": 1})
    with pytest.raises(ValueError):
        bm.gas_per_shard(1, 0, steps)


def test_chain_bound_and_machine_capacity():
    # 30M gas every 12 s is 2.5M gas/s: 300k-gas shards settle at 8.33/s
    assert bm.chain_bound(300_000) == pytest.approx(25 / 3)
    assert bm.chain_bound(300_000, block_gas=15_000_000, block_seconds=6) == pytest.approx(25 / 3)
    with pytest.raises(ValueError):
        bm.chain_bound(0)
    # 2 cores, 0.1 core held by idle polling, 0.19 s per shard: 10 shards/s
    assert bm.machine_capacity(0.19, cores=2, idle_cpu_per_s=0.1) == pytest.approx(10.0)
    assert bm.machine_capacity(0.5, cores=2, idle_cpu_per_s=3.0) == 0.0
    assert math.isinf(bm.machine_capacity(0.0))
