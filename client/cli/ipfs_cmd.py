"""`gpumesh ipfs` commands: add, cat, daemon (thin glue over gpumesh.ipfs; imports inside commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(help="IPFS: add and fetch content (verified), run the embedded Kubo-RPC node.",
                  no_args_is_help=True)

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"
_PATH_ARG = typer.Argument(..., help="File or directory to add (directories recursively).")
_REPO_OPT = typer.Option(None, "--repo", help="Repository folder (default ~/.gpumesh/ipfs).")


@app.command()
def add(
    path: Path = _PATH_ARG,
    cid_version: int = typer.Option(0, "--cid-version", help="0 (Kubo default) or 1 (raw leaves)."),
    only_hash: bool = typer.Option(False, "--only-hash", "-n", help="Only compute the CID; no daemon."),
    pin: bool = typer.Option(True, "--pin/--no-pin", help="Pin what is added."),
    api: str = typer.Option(DEFAULT_API, "--api", help="Kubo RPC API (multiaddr or URL)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a file or directory; prints `added CID NAME` like `ipfs add`."""
    from gpumesh.ipfs.errors import IpfsError
    from gpumesh.ipfs.unixfs import import_file
    from gpumesh.ipfs.unixfs_dir import Entry, import_directory

    if not path.exists():
        raise IpfsError(f"{path} does not exist")
    if only_hash:
        entries: list[Entry] = []
        if path.is_dir():
            import_directory(path, cid_version, entries=entries)
        else:
            entries.append(Entry(path.name, import_file(path, cid_version)))
        rows = [{"name": e.name, "cid": str(e.result.cid), "size": e.result.tsize} for e in entries]
    else:
        from gpumesh.ipfs.kubo import KuboStore

        with KuboStore(api) as store:
            rows = [{"name": path.name, "cid": store.add_path(path, cid_version=cid_version, pin=pin)}]
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0]))
    else:
        for r in rows:
            typer.echo(f"added {r['cid']} {r['name']}")


@app.command()
def cat(
    cid: str = typer.Argument(..., help="CID or /ipfs/CID/path of a file."),
    api: str = typer.Option(DEFAULT_API, "--api", help="Kubo RPC API (multiaddr or URL)."),
) -> None:
    """Write a file's bytes to stdout; every block is verified against its CID first."""
    from gpumesh.ipfs.kubo import KuboStore

    with KuboStore(api) as store:
        store.cat_to(cid, sys.stdout.buffer)
    sys.stdout.buffer.flush()


@app.command()
def daemon(
    api: str = typer.Option(DEFAULT_API, "--api", help="Listen address, /ip4/HOST/tcp/PORT (PORT 0: any)."),
    repo: Path = _REPO_OPT,
) -> None:
    """Run the embedded Kubo-RPC node in the foreground until SIGTERM/SIGINT."""
    import signal
    import threading

    from gpumesh.ipfs.errors import IpfsError
    from gpumesh.ipfs.node import EmbeddedNode

    parts = api.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp" or not parts[3].isdigit():
        raise IpfsError(f"--api must look like /ip4/127.0.0.1/tcp/5001, got {api!r}")
    repo_path = repo or Path.home() / ".gpumesh" / "ipfs"
    node = EmbeddedNode(repo_path, host=parts[1], port=int(parts[3]))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    typer.echo(f"API server listening on {node.api_multiaddr}")
    sys.stdout.flush()
    node.wait(stop)
