"""The watchtower's pure decisions: which units a sample holds (seeded, reproducible, uniform) and
how a check reads in the log."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gpumesh.node.watchtower.checker import CheckResult, check_rate, draw_seed, mismatches, sample_units


@pytest.mark.parametrize(("units", "rate", "expect"), [(1, 0.01, 1), (4, 0.5, 2), (10, 0.25, 3), (17, 1.0, 17),
                                                        (100, 0.001, 1), (7, 0.99, 7), (1000, 0.1, 100)])
def test_sample_size_is_ceil_rate_times_units_at_least_one(units, rate, expect):
    s = sample_units(units, rate, 12345)
    assert len(s) == expect
    assert list(s) == sorted(set(s)) and all(0 <= u < units for u in s)


def test_same_seed_same_sample_other_seeds_differ():
    a = sample_units(1000, 0.05, 99)
    assert a == sample_units(1000, 0.05, 99)  # what a restarted watchtower re-derives from its record
    others = {sample_units(1000, 0.05, s) for s in range(20)}
    assert len(others) == 20


def test_full_rate_checks_every_unit_in_order():
    assert sample_units(9, 1.0, 5) == tuple(range(9))


def test_samples_are_uniform_over_units():
    # 4000 samples of 3 out of 12 units: each unit is expected 1000 times (binomial sd ~27).
    counts = Counter(u for seed in range(4000) for u in sample_units(12, 0.25, seed))
    assert set(counts) == set(range(12))
    assert all(abs(c - 1000) < 150 for c in counts.values()), counts


def test_seed_draws_are_64_bit_and_fresh():
    seeds = {draw_seed() for _ in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**64 for s in seeds)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), "0.5"])
def test_rates_outside_zero_one_are_refused(bad):
    with pytest.raises(ValueError, match="sample rate"):
        check_rate(bad)
    with pytest.raises(ValueError):
        sample_units(10, bad, 1)


def test_mismatches_name_exactly_the_differing_units():
    rng = random.Random(3)
    worker = [rng.randbytes(32) for _ in range(8)]
    own = {0: worker[0], 3: b"\x01" * 32, 5: worker[5], 7: b"\x02" * 32}
    assert mismatches(own, worker) == (3, 7)
    assert mismatches({}, worker) == ()


def _result(mism=(), differs=False, full=False, note=""):
    return CheckResult(7, 4, (0, 1, 2, 3) if full else (1, 3), {1: b"a" * 32, 3: b"b" * 32},
                       None if full else (b"x" * 32,) * 4, mism, differs, full, note)


def test_log_lines():
    assert _result().line() == "job 7: checked 2/4 units: OK"
    assert _result((3,)).line(12) == "job 7: checked 2/4 units: MISMATCH unit 3 -> game 12"
    assert _result((1, 3)).line() == "job 7: checked 2/4 units: MISMATCH unit 1 (+1 more)"
    assert _result(differs=True, full=True, note="outputs unusable").line(2) == \
        "job 7: checked 4/4 units (outputs unusable): MISMATCH result root -> game 2"
    assert _result().ok and not _result((3,)).ok and not _result(differs=True).ok


def test_json_keeps_only_the_mismatched_roots():
    j = _result((3,)).to_json()
    assert j["checked"] == [1, 3] and j["mismatched"] == [3]
    assert j["own_roots"] == {"3": "0x" + (b"b" * 32).hex()}
