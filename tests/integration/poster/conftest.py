"""Poster tests use the worker folder's fixtures (which build on the shared node devnet), and `gm`:
the gpumesh CLI run in-process against that devnet (rc checked, stdout/stderr returned)."""

import logging

import pytest

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main
from tests.integration.worker.conftest import *  # noqa: F403 - shared worker/poster fixtures


@pytest.fixture()
def gm(env, tmp_path, capsys):
    def run(*args: str, code: int = 0, rpc: str | None = None, ipfs: str | None = None):
        cli_state._settings = None  # each invocation builds its Settings, as a new process would
        saved = list(logging.root.handlers), logging.root.level  # a daemon command sets up logging:
        try:  # undo it, as the end of its process would, so later tests' stderr holds only their own
            rc = main(["--home", str(tmp_path / "home"), "--rpc-url", rpc or env.anvil.url,
                       "--ipfs-api", ipfs or env.ipfs.api_multiaddr, *args])
        finally:
            logging.root.handlers[:] = saved[0]
            logging.root.setLevel(saved[1])
        out, err = capsys.readouterr()
        assert rc == code, (rc, out, err)
        return out, err

    run.d = ("--deployment", str(env.dep_path))
    return run
