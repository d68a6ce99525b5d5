"""Keystore accounts: encryption, wrong password, unknown names, Foundry keystores and keystore paths,
and that keys never appear in output."""

import json
import shutil
import stat
from pathlib import Path

import pytest
from eth_account import Account

from gpumesh.client.cli.account_cmd import eth_decimal
from gpumesh.client.core.errors import AccountError
from gpumesh.client.services.accounts import AccountStore, dev_account

# A throwaway key made up for this test only.
TEST_KEY = "0x" + "11" * 32


def pw(value):
    return lambda name, confirm: value


@pytest.fixture
def store(tmp_path):
    return AccountStore(tmp_path / "keystores", dev_accounts=3, kdf_iterations=2**10)


def test_import_encrypts_and_unlocks(store):
    info = store.import_key("alice", TEST_KEY, pw("correct horse"))
    assert info.address == Account.from_key(TEST_KEY).address
    text = info.path.read_text()
    assert TEST_KEY[2:] not in text  # the keystore holds ciphertext only
    assert json.loads(text)["crypto"]["kdf"] == "scrypt"
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert store.unlock("alice", pw("correct horse")).key.hex().removeprefix("0x") == TEST_KEY[2:]


def test_wrong_password_is_a_clear_error(store):
    store.import_key("alice", TEST_KEY, pw("right"))
    with pytest.raises(AccountError, match="wrong password for account 'alice'"):
        store.unlock("alice", pw("wrong"))


def test_unknown_account_lists_the_known_ones(store):
    store.import_key("alice", TEST_KEY, pw("x"))
    with pytest.raises(AccountError, match=r"unknown account 'bob' \(known: dev0, dev1, dev2, alice\)"):
        store.unlock("bob", pw("x"))


def test_dev_accounts_only_within_range(store):
    assert store.address("dev2") == dev_account(2).address
    with pytest.raises(AccountError, match="unknown account 'dev7'"):
        store.address("dev7")
    with pytest.raises(AccountError, match="reserved"):
        store.new("dev1", pw("x"))


def test_duplicate_and_invalid_names(store):
    store.new("alice", pw("x"))
    with pytest.raises(AccountError, match="already exists"):
        store.new("alice", pw("x"))
    with pytest.raises(AccountError, match="invalid account name"):
        store.new("../evil", pw("x"))


def test_invalid_private_key(store):
    with pytest.raises(AccountError, match="not a valid private key"):
        store.import_key("alice", "0x1234", pw("x"))


def test_empty_password_refused(store):
    with pytest.raises(AccountError, match="empty password"):
        store.new("alice", pw(""))


# Written by `cast wallet import alice --private-key <anvil's public dev key 1> --unsafe-password pw123`
# (Foundry 1.7.1): Web3 Secret Storage v3 without an "address" field.
FOUNDRY_KEYSTORE = Path(__file__).parent / "data" / "foundry_keystore_dev1"


def test_foundry_keystores_are_accounts(tmp_path):
    folder = tmp_path / "foundry"
    folder.mkdir()
    shutil.copy(FOUNDRY_KEYSTORE, folder / "alice")
    store = AccountStore(tmp_path / "keystores", foundry_dir=folder, kdf_iterations=2**10)
    assert [(a.name, a.address, a.kind) for a in store.list()] == [("alice", None, "foundry")]
    assert store.unlock("alice", pw("pw123")).address == dev_account(1).address
    # the address is not stored: learning it unlocks the keystore
    with pytest.raises(AccountError, match="stores no address"):
        store.address("alice")
    assert store.address("alice", pw("pw123")) == dev_account(1).address
    with pytest.raises(AccountError, match="wrong password for account 'alice'"):
        store.unlock("alice", pw("nope"))
    # a gpumesh keystore of the same name comes first
    store.import_key("alice", TEST_KEY, pw("x"))
    assert store.unlock("alice", pw("x")).address == Account.from_key(TEST_KEY).address


def test_a_keystore_path_is_an_account(tmp_path):
    store = AccountStore(tmp_path / "keystores", password=pw("pw123"))
    assert store.address(str(FOUNDRY_KEYSTORE)) == dev_account(1).address  # unlocked with the store's password
    with pytest.raises(AccountError, match="no keystore file at"):
        store.unlock(str(tmp_path / "missing.json"), pw("x"))


def test_balance_in_eth_is_exact():
    assert [eth_decimal(w) for w in (0, 1, 10**18, 15 * 10**17, 10**40 + 1)] == \
        ["0", "0.000000000000000001", "1", "1.5", "10000000000000000000000.000000000000000001"]
