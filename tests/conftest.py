"""Fixtures for every test folder.

`_restore_root_logging` (autouse): a daemon command run in-process (`gpumesh worker run` through
main(), a watchtower, the explorer) configures the root logger for the process it believes it owns
(node/common/logs.setup_daemon_logging). In a real process that ends with the command; here it
would outlive the test and print the next tests' daemon lines into their captured stderr. Each
test gets back the root logger's handlers and level as they were before it.
"""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
