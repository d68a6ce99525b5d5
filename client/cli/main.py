"""The `gpumesh` command: builds the Settings object, registers the groups, and is the single
error boundary (any GpumeshError -> one line on stderr + its exit code; --traceback for more).

Importing this module must stay fast: group modules import heavy libraries (torch, web3) inside
their commands, never at module level. A test asserts that torch is not imported here.
"""

from __future__ import annotations

import sys

import typer

from gpumesh.client.cli import (
    account_cmd,
    demo_cmd,
    deploy_cmd,
    devnet_cmd,
    explorer_cmd,
    ipfs_cmd,
    job_cmd,
    program_cmd,
    watchtower_cmd,
    worker_cmd,
)
from gpumesh.client.cli.context import cli_state
from gpumesh.client.core.errors import GpumeshError, UsageError

app = typer.Typer(
    name="gpumesh",
    help="Trustless ML compute: post int8 tensor jobs, sell GPU time, watch and prove fraud on-chain.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # the process may hold keys
    add_completion=False,
)


@app.callback()
def _root(
    config: str = typer.Option(None, "--config", help="Config file (default $GPUMESH_HOME/config.toml)."),
    home: str = typer.Option(None, "--home", help="gpumesh home folder (default ~/.gpumesh)."),
    network: str = typer.Option(None, "--network", help="Network profile name from the config file."),
    rpc_url: str = typer.Option(None, "--rpc-url", help="JSON-RPC URL of the EVM chain."),
    ipfs_api: str = typer.Option(None, "--ipfs-api", help="IPFS RPC API multiaddr or URL."),
    keystore: str = typer.Option(None, "--keystore", help="Keystore file to sign with (a gpumesh or Foundry "
                                 "keystore; the default account of every command)."),
    password_file: str = typer.Option(None, "--password-file", help="File whose first line is the keystore "
                                      "password (default $GPUMESH_PASSWORD_FILE; else a prompt)."),
    traceback: bool = typer.Option(False, "--traceback", help="Show the full traceback on errors."),
) -> None:
    cli_state.flags = {
        "config": config,
        "home": home,
        "network": network,
        "rpc_url": rpc_url,
        "ipfs_api": ipfs_api,
        "account": _keystore_path(keystore),
        "password_file": password_file,
    }
    cli_state.traceback = traceback


def _keystore_path(path: str | None) -> str | None:
    """--keystore as a path (so a bare file name is not taken for an account name)."""
    from pathlib import Path

    return None if path is None else str(Path(path).expanduser().absolute())


app.add_typer(devnet_cmd.app, name="devnet")
app.add_typer(deploy_cmd.app, name="deploy")
app.add_typer(account_cmd.app, name="account")
app.add_typer(ipfs_cmd.app, name="ipfs")
app.add_typer(program_cmd.app, name="program")
app.add_typer(job_cmd.app, name="job")
app.add_typer(worker_cmd.app, name="worker")
app.add_typer(watchtower_cmd.app, name="watchtower")
app.add_typer(demo_cmd.app, name="demo")
app.add_typer(explorer_cmd.app, name="explorer")


def main(argv: list[str] | None = None) -> int:
    """Console entry point with the error boundary."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except GpumeshError as exc:
        _fail(exc, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("gpumesh: interrupted\n")
        return 130
    except SystemExit as exc:  # typer.Exit / click's own exits
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - the boundary: never a traceback wall
        line = _usage_line(exc)
        if line is not None:
            _fail(UsageError(line), 2)
            return 2
        _fail(exc, 1, unexpected=True)
        return 1
    # click returns typer.Exit's code instead of raising when standalone_mode is off
    return rc if isinstance(rc, int) else 0


def _usage_line(exc: Exception) -> str | None:
    """A click usage error (bad value, missing option, unknown command) as one line naming the
    command and the parameter: `job status: invalid value for JOB_ID: ... (see gpumesh job status
    --help)`; None for any other exception. Typer >= 0.2x vendors click as typer._click."""
    import importlib

    kinds = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            kinds.append(importlib.import_module(mod).ClickException)
        except ImportError:
            continue
    if not isinstance(exc, tuple(kinds)):
        return None
    msg = exc.format_message().strip().replace("\n", " ").rstrip(".")  # type: ignore[attr-defined]
    msg = msg[:1].lower() + msg[1:] if msg.startswith(("Invalid", "Missing", "No such", "Got")) else msg
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    cmd = path.split(" ", 1)[1] if " " in path else ""
    return f"{cmd + ': ' if cmd else ''}{msg} (see `{' '.join(['gpumesh', cmd]).strip()} --help`)"


def _fail(exc: BaseException, code: int, unexpected: bool = False) -> None:
    if cli_state.traceback:
        import traceback as tb

        tb.print_exception(exc)
    kind = f"{type(exc).__name__}: " if unexpected else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sys.stderr.write(f"gpumesh: error: {kind}{msg}\n")


if __name__ == "__main__":
    sys.exit(main())
