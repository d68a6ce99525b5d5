"""One log format for every gpumesh daemon (worker, watchtower, and any other long-running command):

    2026-12-02 08:51:07 INFO    gpumesh.worker: job 3: claimed (0.5 ETH reward, 1 ETH stake locked, 17 units)

UTC time to the second (journald and log shippers add their own stamps; a daemon's own says when
on any machine), the level padded to one width, the logger's name (which daemon and which part
of it: gpumesh.worker, gpumesh.worker.outbox, gpumesh.watchtower...), the message. `-v` shows
DEBUG, `-q` only warnings and errors. Libraries that log every request (web3, urllib3, websockets)
stay at WARNING whatever the level: their lines repeat what our own say in one line.

Called once by each daemon's entry point (gpumesh.client.cli); nothing below it configures logging.
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
NOISY = ("web3", "urllib3", "asyncio", "websockets", "httpx", "filelock")


def level_for(verbose: bool, quiet: bool) -> int:
    """-v: DEBUG, -q: WARNING, neither: INFO (both: -v wins, a person asked to see more)."""
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record is emitted, not the stream it was
    when the handler was made: a command run in-process after another (the CLI's tests, an
    embedding program) may have swapped or closed that stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_daemon_logging(verbose: bool = False, quiet: bool = False, stream=None) -> logging.Handler:
    """Configure the root logger for a daemon (replacing any handler set before); returns the handler."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    fmt = logging.Formatter(FORMAT, DATEFMT)
    fmt.converter = time.gmtime  # UTC, like the chain's timestamps
    handler.setFormatter(fmt)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level_for(verbose, quiet))
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
