"""The worker's acceptance-policy settings: [worker] config keys < GPUMESH_WORKER_* < `worker run`
flags < Policy defaults underneath, and one clear error for a bad value."""

from pathlib import Path

import pytest

from gpumesh.client.cli import context
from gpumesh.client.cli.config import load_settings
from gpumesh.client.cli.worker_cmd import _policy
from gpumesh.client.core.errors import ConfigError, UsageError
from gpumesh.node.worker.policy import Policy

GWEI = 10**9


def home(tmp_path: Path, text: str = "") -> dict:
    (tmp_path / "config.toml").write_text(text)
    return {"GPUMESH_HOME": str(tmp_path)}


def test_worker_table_and_environment(tmp_path):
    env = home(tmp_path, "[worker]\nsafety_factor = 5\nmax_defence_gas = 2_000_000\ngas_price = '40gwei'\n"
                         "min_reward = 0.01\n")
    w = load_settings({}, env).worker
    assert (w.safety_factor, w.max_defence_gas, w.gas_price, w.min_reward) == (5.0, 2_000_000, "40gwei", "0.01")
    assert w.max_stake_ratio is None and w.time_margin is None
    env.update(GPUMESH_WORKER_SAFETY_FACTOR="7.5", GPUMESH_WORKER_TIME_MARGIN="120", GPUMESH_WORKER_MAX_DEFENCE_GAS="0x10")
    w = load_settings({}, env).worker
    assert (w.safety_factor, w.time_margin, w.max_defence_gas) == (7.5, 120.0, 16)


@pytest.mark.parametrize(("text", "env", "needle"), [
    ("[worker]\nsafety = 3\n", {}, "unknown key 'safety'"),
    ("[worker]\nsafety_factor = 'fast'\n", {}, r"\[worker\] safety_factor must be a number"),
    ("", {"GPUMESH_WORKER_MAX_DEFENCE_GAS": "lots"}, "GPUMESH_WORKER_MAX_DEFENCE_GAS must be an integer"),
    ("[worker]\nmax_defence_gas = true\n", {}, "must be an integer"),
])
def test_bad_worker_settings_are_one_clear_error(tmp_path, text, env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings({}, {**home(tmp_path, text), **env})


@pytest.fixture()
def with_settings(tmp_path, monkeypatch):
    def use(text: str, env: dict | None = None):
        monkeypatch.setattr(context.cli_state, "_settings", load_settings({}, {**home(tmp_path, text), **(env or {})}))
    return use


def test_policy_defaults_without_settings(with_settings):
    with_settings("")
    assert _policy(None, None, None, None, None, None) == Policy()


def test_policy_flags_over_settings(with_settings):
    with_settings("[worker]\nsafety_factor = 5\ngas_price = 40\nmax_stake_ratio = 10\n",
                  {"GPUMESH_WORKER_MIN_REWARD": "20gwei"})
    p = _policy(None, None, None, None, None, None)
    assert (p.safety_factor, p.gas_price, p.max_stake_ratio, p.min_reward) == (5.0, 40 * GWEI, 10.0, 20 * GWEI)
    p = _policy("0.5", 2.0, 7, "1000wei", 4.0, 1.0)
    assert p == Policy(min_reward=5 * 10**17, max_stake_ratio=2.0, max_defence_gas=7, gas_price=1000,
                       safety_factor=4.0, time_margin=1.0)


def test_policy_out_of_range_is_a_usage_error(with_settings):
    with_settings("[worker]\nsafety_factor = 0.5\n")
    with pytest.raises(UsageError, match="safety_factor must be >= 1"):
        _policy(None, None, None, None, None, None)
