"""Accounts: encrypted eth-account keystores under <home>/keystores, and the devnet's funded dev
accounts (dev0..devN, derived from anvil's public test mnemonic).

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
    address: str
    kind: str  # "keystore" | "dev"
    path: Path | None = None


def dev_account(index: int) -> LocalAccount:
    """Dev account `index` of the devnet mnemonic (anvil funds the first N)."""
    return Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


class AccountStore:
    """Keystores in one folder, plus dev accounts when `dev_accounts` > 0 (devnet profile only)."""

    def __init__(self, keystore_dir: Path, dev_accounts: int = 0, kdf_iterations: int | None = None) -> None:
        self.dir = keystore_dir
        self.dev_accounts = dev_accounts
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
        return out

    def address(self, name: str) -> str:
        m = DEV_ACCOUNT_RE.match(name)
        if m:
            return self._dev(name, int(m.group(1))).address
        return self._address_of(self._path(name, must_exist=True))

    # --- creating ----------------------------------------------------------------------------
    def new(self, name: str, password: PasswordProvider) -> AccountInfo:
        path = self._path(name, must_exist=False)
        acct = Account.create()
        return self._write(name, path, acct, password(name, True))

    def import_key(self, name: str, private_key: str, password: PasswordProvider) -> AccountInfo:
        path = self._path(name, must_exist=False)
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
        path = self._path(name, must_exist=True)
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

    def _path(self, name: str, must_exist: bool) -> Path:
        if not NAME_RE.match(name):
            raise AccountError(f"invalid account name '{name}' (letters, digits, '_', '.', '-')")
        if not must_exist and DEV_ACCOUNT_RE.match(name):
            raise AccountError(f"'{name}' is reserved for devnet dev accounts; choose another name")
        path = self.dir / f"{name}.json"
        if must_exist and not path.exists():
            known = ", ".join(a.name for a in self.list()) or "none"
            raise AccountError(f"unknown account '{name}' (known: {known})")
        if not must_exist and path.exists():
            raise AccountError(f"account '{name}' already exists ({path})")
        return path

    def _read(self, path: Path) -> dict:
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AccountError(f"keystore {path} is unreadable: {exc}") from None
        if not isinstance(blob, dict) or "crypto" not in blob and "Crypto" not in blob:
            raise AccountError(f"keystore {path} is not an encrypted eth keystore")
        return blob

    def _address_of(self, path: Path) -> str:
        addr = self._read(path).get("address", "")
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
