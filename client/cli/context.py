"""Process-wide CLI state set by the root callback (raw flags, traceback switch) and the lazily built
Settings object that every command receives from `settings()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _CliState:
    flags: dict[str, Any] = field(default_factory=dict)
    traceback: bool = False
    _settings: Any = None


cli_state = _CliState()


def settings():  # -> gpumesh.client.core.settings.Settings
    """The Settings for this invocation: defaults < config file < GPUMESH_* env < flags."""
    if cli_state._settings is None:
        from gpumesh.client.cli.config import load_settings

        cli_state._settings = load_settings(cli_state.flags)
    return cli_state._settings
