"""Keystore accounts: encryption, wrong password, unknown names, and that keys never appear in output."""

import json
import stat

import pytest
from eth_account import Account

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
