"""Running the `gpumesh` entry point in-process the way a new process would (fresh Settings each call),
with its exit code checked and its output captured: the helper CLI tests share."""

from __future__ import annotations

import logging

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main


def run_cli(capsys, home, *args: str, code: int = 0) -> tuple[str, str]:
    """(stdout, stderr) of `gpumesh --home HOME ARGS...`, asserting its exit code is `code`."""
    cli_state._settings = None  # each invocation builds its Settings, as a new process would
    saved = list(logging.root.handlers), logging.root.level  # a daemon command sets up logging: undo
    try:  # it, as the end of its process would, so later commands' stderr holds only their own lines
        rc = main(["--home", str(home), *args])
    finally:
        logging.root.handlers[:] = saved[0]
        logging.root.setLevel(saved[1])
    out, err = capsys.readouterr()
    assert rc == code, (rc, out, err)
    return out, err
