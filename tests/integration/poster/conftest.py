"""Poster tests use the worker folder's fixtures (which build on the shared node devnet), and `gm`:
the gpumesh CLI run in-process against that devnet (rc checked, stdout/stderr returned)."""

import pytest

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main
from tests.integration.worker.conftest import *  # noqa: F403 - shared worker/poster fixtures


@pytest.fixture()
def gm(env, tmp_path, capsys):
    def run(*args: str, code: int = 0, rpc: str | None = None, ipfs: str | None = None):
        cli_state._settings = None  # each invocation builds its Settings, as a new process would
        rc = main(["--home", str(tmp_path / "home"), "--rpc-url", rpc or env.anvil.url,
                   "--ipfs-api", ipfs or env.ipfs.api_multiaddr, *args])
        out, err = capsys.readouterr()
        assert rc == code, (rc, out, err)
        return out, err

    run.d = ("--deployment", str(env.dep_path))
    return run
