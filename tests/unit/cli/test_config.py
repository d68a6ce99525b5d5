"""Settings precedence and config-file errors (defaults < file < env < flags)."""

from pathlib import Path

import pytest

from gpumesh.client.cli.config import load_settings
from gpumesh.client.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def test_defaults_without_a_config_file(tmp_path):
    s = load_settings({}, {"GPUMESH_HOME": str(tmp_path)})
    assert s.network.name == "devnet"
    assert s.network.rpc_url == "http://127.0.0.1:8545"
    assert s.network.chain_id == 31337
    assert s.deployment_file == tmp_path / "deployments" / "devnet.json"
    assert s.ipfs_external is False
    assert s.config_file is None


def test_precedence_file_env_flag(tmp_path):
    write(tmp_path, 'ipfs_api = "/ip4/127.0.0.1/tcp/6001"\n[networks.devnet]\nrpc_url = "http://127.0.0.1:1111"\n')
    env = {"GPUMESH_HOME": str(tmp_path)}
    assert load_settings({}, env).network.rpc_url == "http://127.0.0.1:1111"
    env["GPUMESH_RPC_URL"] = "http://127.0.0.1:2222"
    assert load_settings({}, env).network.rpc_url == "http://127.0.0.1:2222"
    assert load_settings({"rpc_url": "http://127.0.0.1:3333"}, env).network.rpc_url == "http://127.0.0.1:3333"
    s = load_settings({}, env)
    assert s.ipfs_api == "/ip4/127.0.0.1/tcp/6001" and s.ipfs_external


def test_named_network_profile(tmp_path):
    write(tmp_path, '[networks.sepolia]\nrpc_url = "https://rpc.example"\nchain_id = 11155111\n')
    s = load_settings({"network": "sepolia"}, {"GPUMESH_HOME": str(tmp_path)})
    assert (s.network.rpc_url, s.network.chain_id) == ("https://rpc.example", 11155111)
    assert s.deployment_file == tmp_path / "deployments" / "sepolia.json"


def test_zero_port_from_env_means_any_free_port(tmp_path):
    s = load_settings({}, {"GPUMESH_HOME": str(tmp_path), "GPUMESH_ANVIL_PORT": "0"})
    assert s.devnet.anvil_port == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("network = [unclosed\n", "is not valid TOML"),
        ("colour = 'blue'\n", "unknown key 'colour'"),
        ("[networks.devnet]\nrpc = 'x'\n", "unknown key 'rpc'"),
        ("network = 'mainnet'\n", "unknown network profile 'mainnet'"),
    ],
)
def test_malformed_config_is_one_clear_error(tmp_path, text, needle):
    write(tmp_path, text)
    with pytest.raises(ConfigError, match=needle) as exc:
        load_settings({}, {"GPUMESH_HOME": str(tmp_path)})
    assert "\n" not in str(exc.value)


def test_bad_integer_in_environment(tmp_path):
    with pytest.raises(ConfigError, match="GPUMESH_ANVIL_PORT must be an integer"):
        load_settings({}, {"GPUMESH_HOME": str(tmp_path), "GPUMESH_ANVIL_PORT": "eighty"})


def test_explicit_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"config": str(tmp_path / "nope.toml")}, {"GPUMESH_HOME": str(tmp_path)})


def test_a_running_devnet_is_found_through_its_state_file(tmp_path):
    (tmp_path / "devnet").mkdir()
    (tmp_path / "devnet" / "state.json").write_text(
        '{"rpc_url": "http://127.0.0.1:40001", "ipfs_api": "/ip4/127.0.0.1/tcp/40002"}')
    s = load_settings({}, {"GPUMESH_HOME": str(tmp_path)})
    assert (s.network.rpc_url, s.ipfs_api, s.ipfs_external) == (
        "http://127.0.0.1:40001", "/ip4/127.0.0.1/tcp/40002", False)
    # an explicit choice still wins over the state file
    s = load_settings({"rpc_url": "http://127.0.0.1:9"}, {"GPUMESH_HOME": str(tmp_path)})
    assert s.network.rpc_url == "http://127.0.0.1:9"
