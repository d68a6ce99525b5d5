"""`gpumesh ipfs add/cat/daemon` on a real embedded node: the API comes from the global --ipfs-api,
GPUMESH_IPFS_API, or the running devnet's state file; `add --json` prints Kubo's shape (one
{"Name","Hash","Size"} object per path, Size a string, root last) and the same CIDs as `add -n`;
`daemon` keeps its repo under GPUMESH_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main
from tests.cli_run import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture()
def tree(tmp_path):
    d = tmp_path / "addd"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"hello\n")
    (d / "sub" / "b.txt").write_bytes(b"world\n")
    return d


@pytest.fixture()
def gm(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GPUMESH_IPFS_API", raising=False)

    return lambda *args, code=0: run_cli(capsys, tmp_path / "home", *args, code=code)


def test_add_json_is_kubos_shape_through_the_global_api(node, gm, tree):
    out, _ = gm("--ipfs-api", node.api_url, "ipfs", "add", str(tree), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    # "hello\n" as Kubo adds it: CIDv0, 14 bytes of dag-pb
    assert rows[0] == {"Name": "addd/a.txt", "Hash": "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN", "Size": "14"}
    assert [r["Name"] for r in rows] == ["addd/a.txt", "addd/sub/b.txt", "addd/sub", "addd"]
    assert all(set(r) == {"Name", "Hash", "Size"} and isinstance(r["Size"], str) for r in rows)
    local, _ = gm("ipfs", "add", "-n", str(tree), "--json")
    assert local == out
    text, _ = gm("--ipfs-api", node.api_multiaddr, "ipfs", "add", str(tree))
    assert text.splitlines()[-1] == f"added {rows[-1]['Hash']} addd"
    q, _ = gm("--ipfs-api", node.api_multiaddr, "ipfs", "add", "-q", str(tree / "a.txt"))
    assert q == rows[0]["Hash"] + "\n"


def test_cat_follows_the_environment_and_the_devnet_state(node, tree, tmp_path, monkeypatch, capsysbinary):
    monkeypatch.delenv("GPUMESH_IPFS_API", raising=False)
    home = str(tmp_path / "home")

    def run(*args: str) -> tuple[int, bytes, bytes]:
        cli_state._settings = None
        rc = main(["--home", home, *args])
        out, err = capsysbinary.readouterr()
        return rc, out, err

    rc, out, _ = run("--ipfs-api", node.api_multiaddr, "ipfs", "add", "-q", str(tree / "sub" / "b.txt"))
    cid = out.decode().strip()
    monkeypatch.setenv("GPUMESH_IPFS_API", node.api_multiaddr)
    assert run("ipfs", "cat", cid)[:2] == (0, b"world\n")
    monkeypatch.delenv("GPUMESH_IPFS_API")
    # no API named: the running devnet's (its state file under GPUMESH_HOME)
    state = tmp_path / "home" / "devnet" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"ipfs_api": node.api_multiaddr}))
    assert run("ipfs", "cat", cid)[:2] == (0, b"world\n")
    state.write_text(json.dumps({"ipfs_api": "/ip4/127.0.0.1/tcp/9"}))
    assert run("ipfs", "cat", cid) == (6, b"", b"gpumesh: error: IPFS API at http://127.0.0.1:9 is unreachable "
                                             b"(connection refused)\n")


def test_daemon_repo_defaults_under_gpumesh_home(tmp_path):
    gpumesh = Path(sys.executable).parent / "gpumesh"
    env = {**os.environ, "GPUMESH_HOME": str(tmp_path / "gh")}
    env.pop("GPUMESH_IPFS_API", None)
    proc = subprocess.Popen([str(gpumesh), "ipfs", "daemon", "--api", "http://127.0.0.1:0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("API server listening on /ip4/127.0.0.1/tcp/"), (line, proc.stderr.read())
        assert (tmp_path / "gh" / "ipfs" / "api").read_text().strip() == line.rsplit(" ", 1)[1]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
