"""One exception base for the whole client package; every layer raises a subclass.

The CLI's error boundary turns any `GpumeshError` into one line and its `exit_code`.
"""

from __future__ import annotations


class GpumeshError(Exception):
    """Base of every expected gpumesh failure (bad input, unreachable service, lost race...)."""

    exit_code: int = 1

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class ClientError(GpumeshError):
    """Raised by gpumesh.client (config, accounts, chain, services)."""


class ConfigError(ClientError):
    exit_code = 2


class UsageError(ClientError):
    exit_code = 2


class AccountError(ClientError):
    exit_code = 3


class ChainError(ClientError):
    """The chain did something we did not expect, or cannot be reached."""

    exit_code = 4


class ValidationError(ClientError):
    """Data (a program, a spec, a tensor) is malformed or does not match its commitment."""

    exit_code = 5
