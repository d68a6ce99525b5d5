"""The CLI entry point stays light (no torch, no web3 at import) and has one error boundary."""

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_the_cli_does_not_import_torch_or_web3():
    r = _run(
        "import sys, gpumesh.client.cli.main as m; "
        "heavy = [x for x in ('torch', 'web3', 'ipfshttpclient', 'numpy') if x in sys.modules]; "
        "print(','.join(heavy))"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"imported at CLI start-up: {r.stdout.strip()}"


def test_help_lists_every_group():
    r = _run("from gpumesh.client.cli.main import main; main(['--help'])")
    assert r.returncode == 0, r.stderr
    for group in ("devnet", "account", "ipfs", "program", "job", "worker", "watchtower", "demo"):
        assert group in r.stdout


def test_errors_are_one_line_and_nonzero(tmp_path):
    code = (
        "import sys; from gpumesh.client.cli.main import main; "
        f"sys.exit(main(['--home', {str(tmp_path)!r}, 'account', 'balance', 'nobody']))"
    )
    r = _run(code)
    assert r.returncode == 3
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("gpumesh: error: unknown account 'nobody'")
    assert "Traceback" not in r.stderr


def test_unreachable_rpc_is_one_line(tmp_path):
    code = (
        "import sys; from gpumesh.client.cli.main import main; "
        f"sys.exit(main(['--home', {str(tmp_path)!r}, '--rpc-url', 'http://127.0.0.1:9', 'account', 'balance', 'dev0']))"
    )
    r = _run(code)
    assert r.returncode == 4
    assert r.stderr.strip() == ("gpumesh: error: RPC at http://127.0.0.1:9 is unreachable (connection refused): "
                                "start the local devnet with `gpumesh devnet up` (or pass --rpc-url)")


def test_unreachable_remote_rpc_points_at_the_profile():
    from gpumesh.client.services.rpc import unreachable_hint

    assert "devnet up" in unreachable_hint("http://localhost:8545")
    assert "devnet up" not in unreachable_hint("https://rpc.example.org") and "--rpc-url" in unreachable_hint(
        "https://rpc.example.org")


def test_malformed_config_file_from_the_cli(tmp_path):
    (tmp_path / "config.toml").write_text("network = [\n")
    code = (
        "import sys; from gpumesh.client.cli.main import main; "
        f"sys.exit(main(['--home', {str(tmp_path)!r}, 'account', 'list']))"
    )
    r = _run(code)
    assert r.returncode == 2
    assert "is not valid TOML" in r.stderr and r.stderr.strip().count("\n") == 0
