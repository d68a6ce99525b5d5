"""Poster tests use the worker folder's fixtures (which build on the shared node devnet), and `gm`:
the gpumesh CLI run in-process against that devnet (rc checked, stdout/stderr returned)."""

import pytest

from tests.cli_run import run_cli
from tests.integration.worker.conftest import *  # noqa: F403 - shared worker/poster fixtures


@pytest.fixture()
def gm(env, tmp_path, capsys):
    def run(*args: str, code: int = 0, rpc: str | None = None, ipfs: str | None = None):
        return run_cli(capsys, tmp_path / "home", "--rpc-url", rpc or env.anvil.url,
                       "--ipfs-api", ipfs or env.ipfs.api_multiaddr, *args, code=code)

    run.d = ("--deployment", str(env.dep_path))
    return run
