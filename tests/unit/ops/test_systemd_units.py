"""The shipped systemd units (deploy/systemd): installed by their own script with this checkout's
gpumesh executable, they pass `systemd-analyze verify` with nothing to say, and every flag their
ExecStart passes is one the CLI has (so a renamed option cannot silently break a deployed unit)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from gpumesh.client.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
UNITS = ("gpumesh-worker.service", "gpumesh-watchtower.service")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("units")
    exe = Path(sys.executable).with_name("gpumesh")
    assert exe.is_file(), exe
    env = {"PATH": "/usr/bin:/bin", "UNIT_DIR": str(out), "CONF_DIR": str(out / "etc")}
    subprocess.run([str(ROOT / "deploy/systemd/install.sh"), str(exe)], check=True, env=env, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("unit", UNITS)
def test_units_verify_clean(installed, unit):
    res = subprocess.run(["systemd-analyze", "verify", str(installed / unit)], capture_output=True, text=True,
                         timeout=60)
    said = [ln for ln in (res.stdout + res.stderr).splitlines() if unit in ln or "gpumesh" in ln]
    assert res.returncode == 0 and not said, res.stdout + res.stderr


def test_verify_would_catch_a_broken_unit(installed, tmp_path):
    """The check above can fail: a unit with a typo'd key or a missing executable is reported."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    text = (installed / UNITS[0]).read_text()
    bad = tmp_path / "gpumesh-bad.service"
    bad.write_text(text.replace("RestartSec=", "RestartSek="))
    res = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "RestartSek" in res.stdout + res.stderr


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("unit", UNITS)
def test_execstart_flags_exist(installed, unit):
    line = next(ln for ln in (installed / unit).read_text().splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    root = typer.main.get_command(app)
    i = 1
    flags_root, flags_cmd, words = [], [], []
    while i < len(argv):  # global flags, then "<group> <command>", then its flags
        a = argv[i]
        if a.startswith("--"):
            (flags_cmd if len(words) == 2 else flags_root).append(a)
            i += 2  # every flag here takes a value
        else:
            words.append(a)
            i += 1
    group = root.commands[words[0]]
    cmd = group.commands[words[1]]
    assert set(flags_root) <= _options(root), set(flags_root) - _options(root)
    assert set(flags_cmd) <= _options(cmd), set(flags_cmd) - _options(cmd)
    assert words == [unit.split("-")[1].split(".")[0], "run"]
