"""Accounts: encrypted eth-account keystores under <home>/keystores, Foundry's keystores (`cast wallet
new|import`, ~/.foundry/keystores/NAME, the same Web3 Secret Storage format without an address), any
keystore file named by its path, and the devnet's funded dev accounts (dev0..devN, derived from anvil's
public test mnemonic). A name is looked up in that order: dev account, gpumesh keystore, Foundry's.

Key material never leaves this module except as an eth_account LocalAccount handed to a signer;
nothing here prints or logs a key. Passwords come from a caller-supplied provider (prompt or
GPUMESH_PASSWORD_FILE, decided at the entry point).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from gpumesh.client.core.errors import AccountError

# Anvil's default mnemonic: public test keys, funded only on a local devnet. Never use elsewhere.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_RE = re.compile(r"^dev(\d{1,2})$")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

PasswordProvider = Callable[[str, bool], str]
"""(account name, confirm) -> password. `confirm` is True when a new keystore is being created."""

Account.enable_unaudited_hdwallet_features()


@dataclass(frozen=True)
class AccountInfo:
    name: str
    address: str | None  # None: a keystore that stores no address (Foundry's); known once unlocked
    kind: str  # "keystore" | "foundry" | "file" | "dev"
    path: Path | None = None


def dev_account(index: int) -> LocalAccount:
    """Dev account `index` of the devnet mnemonic (anvil funds the first N)."""
    return Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def is_keystore_path(name: str) -> bool:
    """Whether an --account value names a keystore file (has a folder part or starts with ~ or .)."""
    return "/" in name or name.startswith(("~", "."))


class AccountStore:
    """Keystores in one folder, plus dev accounts when `dev_accounts` > 0 (devnet profile only)."""

    def __init__(self, keystore_dir: Path, dev_accounts: int = 0, kdf_iterations: int | None = None,
                 foundry_dir: Path | None = None, password: PasswordProvider | None = None) -> None:
        self.dir = keystore_dir
        self.dev_accounts = dev_accounts
        self.foundry_dir = foundry_dir
        self._password = password  # unlocks a keystore that stores no address, to learn it
        # None = eth-account's default scrypt work factor; tests pass a small figure.
        self._kdf_iterations = kdf_iterations

    # --- listing -----------------------------------------------------------------------------
    def list(self) -> list[AccountInfo]:
        out = [
            AccountInfo(f"dev{i}", dev_account(i).address, "dev") for i in range(self.dev_accounts)
        ]
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("*.json")):
                out.append(AccountInfo(p.stem, self._address_of(p), "keystore", p))
        taken = {a.name for a in out}
        for p in self._foundry_files():
            if p.name not in taken:
                out.append(AccountInfo(p.name, self._address_of(p), "foundry", p))
        return out

    def address(self, name: str, password: PasswordProvider | None = None) -> str:
        """The address of account `name` (or keystore path); a keystore storing none (Foundry's) is
        unlocked with `password` to learn it."""
        m = DEV_ACCOUNT_RE.match(name)
        if m:
            return self._dev(name, int(m.group(1))).address
        path = self._find(name)
        addr = self._address_of(path)
        if addr is not None:
            return addr
        password = password or self._password
        if password is None:
            raise AccountError(f"keystore {path} stores no address (Foundry writes none): it must be unlocked")
        return self.unlock(name, password).address

    # --- creating ----------------------------------------------------------------------------
    def new(self, name: str, password: PasswordProvider) -> AccountInfo:
        path = self._new_path(name)
        acct = Account.create()
        return self._write(name, path, acct, password(name, True))

    def import_key(self, name: str, private_key: str, password: PasswordProvider) -> AccountInfo:
        path = self._new_path(name)
        try:
            acct = Account.from_key(private_key.strip())
        except (ValueError, TypeError):
            raise AccountError("that is not a valid private key (expected 32 bytes of hex)") from None
        return self._write(name, path, acct, password(name, True))

    # --- unlocking ---------------------------------------------------------------------------
    def unlock(self, name: str, password: PasswordProvider) -> LocalAccount:
        m = DEV_ACCOUNT_RE.match(name)
        if m:
            return self._dev(name, int(m.group(1)))
        path = self._find(name)
        blob = self._read(path)
        try:
            key = Account.decrypt(blob, password(name, False))
        except ValueError:
            raise AccountError(f"wrong password for account '{name}'") from None
        return Account.from_key(key)

    # --- internals ---------------------------------------------------------------------------
    def _dev(self, name: str, index: int) -> LocalAccount:
        if index >= self.dev_accounts:
            raise AccountError(
                f"unknown account '{name}': dev accounts exist only on the devnet profile "
                f"(dev0..dev{max(self.dev_accounts - 1, 0)})"
                if self.dev_accounts
                else f"unknown account '{name}': dev accounts exist only on the devnet profile"
            )
        return dev_account(index)

    def _foundry_files(self) -> list[Path]:
        if self.foundry_dir is None or not self.foundry_dir.is_dir():
            return []
        return sorted(p for p in self.foundry_dir.iterdir() if p.is_file() and not p.name.startswith("."))

    def _find(self, name: str) -> Path:
        """The keystore file of an existing account: a path as given, else <home>/keystores/NAME.json,
        else Foundry's NAME."""
        if is_keystore_path(name):
            path = Path(name).expanduser()
            if not path.is_file():
                raise AccountError(f"no keystore file at {path}")
            return path
        self._check_name(name)
        path = self.dir / f"{name}.json"
        if path.exists():
            return path
        if self.foundry_dir is not None and (self.foundry_dir / name).is_file():
            return self.foundry_dir / name
        known = ", ".join(a.name for a in self.list()) or "none"
        raise AccountError(f"unknown account '{name}' (known: {known})")

    def _new_path(self, name: str) -> Path:
        """Where a new account's keystore goes."""
        self._check_name(name)
        if DEV_ACCOUNT_RE.match(name):
            raise AccountError(f"'{name}' is reserved for devnet dev accounts; choose another name")
        path = self.dir / f"{name}.json"
        if path.exists():
            raise AccountError(f"account '{name}' already exists ({path})")
        return path

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME_RE.match(name):
            raise AccountError(f"invalid account name '{name}' (letters, digits, '_', '.', '-'; or a keystore "
                               "file's path)")

    def _read(self, path: Path) -> dict:
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AccountError(f"keystore {path} is unreadable: {exc}") from None
        if not isinstance(blob, dict) or "crypto" not in blob and "Crypto" not in blob:
            raise AccountError(f"keystore {path} is not an encrypted eth keystore")
        return blob

    def _address_of(self, path: Path) -> str | None:
        addr = self._read(path).get("address")
        if addr is None:
            return None
        from eth_utils import to_checksum_address

        try:
            return to_checksum_address("0x" + addr.removeprefix("0x"))
        except ValueError:
            raise AccountError(f"keystore {path} has no valid address") from None

    def _write(self, name: str, path: Path, acct: LocalAccount, password: str) -> AccountInfo:
        if not password:
            raise AccountError("an empty password is not allowed for a keystore")
        kw = {"iterations": self._kdf_iterations} if self._kdf_iterations else {}
        blob = Account.encrypt(acct.key, password, kdf="scrypt", **kw)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                json.dump(blob, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return AccountInfo(name, acct.address, "keystore", path)
