"""`gpumesh ipfs` commands: add, cat, daemon (thin glue over gpumesh.ipfs; imports inside commands).

The API they talk to is the one every command uses (--ipfs-api, GPUMESH_IPFS_API, the config's
ipfs_api, else the running devnet's node), unless --api names another. `--json` prints what Kubo's
`ipfs add --enc=json` prints: one object per added path, {"Name", "Hash", "Size"} with Size the
cumulative size as a string, root last."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from gpumesh.client.cli.common import QUIET_OPT, VERBOSE_OPT
from gpumesh.client.cli.context import settings

app = typer.Typer(help="IPFS: add and fetch content (verified), run the embedded Kubo-RPC node.",
                  no_args_is_help=True)

_PATH_ARG = typer.Argument(..., help="File or directory to add (directories recursively).")
_API_OPT = typer.Option(None, "--api", help="Kubo RPC API (multiaddr or URL; default: the global --ipfs-api, "
                        "GPUMESH_IPFS_API, the config, else the running devnet's).")
_REPO_OPT = typer.Option(None, "--repo", help="Repository folder (default $GPUMESH_HOME/ipfs).")


@app.command()
def add(
    path: Path = _PATH_ARG,
    cid_version: int = typer.Option(0, "--cid-version", help="0 (Kubo default) or 1 (raw leaves)."),
    only_hash: bool = typer.Option(False, "--only-hash", "-n", help="Only compute the CID; no daemon."),
    pin: bool = typer.Option(True, "--pin/--no-pin", help="Pin what is added."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the CIDs only (Kubo's -q)."),
    api: str = _API_OPT,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per path, as Kubo's --enc=json."),
) -> None:
    """Add a file or directory; prints `added CID NAME` for each path like `ipfs add` (root last)."""
    from gpumesh.ipfs.errors import IpfsError
    from gpumesh.ipfs.unixfs import import_file
    from gpumesh.ipfs.unixfs_dir import Entry, import_directory

    if not path.exists():
        raise IpfsError(f"{path} does not exist")
    if cid_version not in (0, 1):
        raise IpfsError(f"--cid-version {cid_version}: 0 or 1")
    entries: list[Entry] = []
    if only_hash:
        if path.is_dir():
            import_directory(path, cid_version, entries=entries)
        else:
            entries.append(Entry(path.name, import_file(path, cid_version)))
    else:
        from gpumesh.ipfs.kubo import KuboStore

        with KuboStore(api or settings().ipfs_api) as store:
            store.add_path(path, cid_version=cid_version, pin=pin, entries=entries)
    for e in entries:
        if as_json:
            typer.echo(json.dumps({"Name": e.name, "Hash": str(e.result.cid), "Size": str(e.result.tsize)},
                                  separators=(",", ":")))
        elif quiet:
            typer.echo(str(e.result.cid))
        else:
            typer.echo(f"added {e.result.cid} {e.name}")


@app.command()
def cat(
    cid: str = typer.Argument(..., help="CID or /ipfs/CID/path of a file."),
    api: str = _API_OPT,
) -> None:
    """Write a file's bytes to stdout; every block is verified against its CID first."""
    from gpumesh.ipfs.kubo import KuboStore

    with KuboStore(api or settings().ipfs_api) as store:
        store.cat_to(cid, sys.stdout.buffer)
    sys.stdout.buffer.flush()


@app.command()
def daemon(
    api: str = typer.Option(None, "--api", help="Listen address, /ip4/HOST/tcp/PORT or http://HOST:PORT (PORT 0: "
                            "any; default: the named IPFS API, else /ip4/127.0.0.1/tcp/5001)."),
    repo: Path = _REPO_OPT,
    verbose: bool = VERBOSE_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Run the embedded Kubo-RPC node in the foreground until SIGTERM/SIGINT."""
    import signal
    import threading

    from gpumesh.node.common.logs import setup_daemon_logging

    setup_daemon_logging(verbose, quiet)  # the daemons' one log format
    from gpumesh.client.core.settings import DEFAULT_IPFS_API
    from gpumesh.ipfs.apiaddr import parse_api
    from gpumesh.ipfs.errors import IpfsError
    from gpumesh.ipfs.node import EmbeddedNode

    s = settings()
    addr = parse_api(api or (s.ipfs_api if s.ipfs_external else DEFAULT_IPFS_API))
    if addr.proto not in ("ip4", "ip6"):
        raise IpfsError(f"--api {api or s.ipfs_api}: the daemon listens on an IP address, not a name")
    node = EmbeddedNode(repo or s.home / "ipfs", host=addr.host, port=addr.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    typer.echo(f"API server listening on {node.api_multiaddr}")
    sys.stdout.flush()
    node.wait(stop)
