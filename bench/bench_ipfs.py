"""IPFS layer throughput: import (only-hash), add and cat through the embedded node, as ratios
against plain hashlib sha256 of the same bytes measured in the same run.

    .venv/bin/python bench/bench_ipfs.py [SIZE_MIB=256]

add = KuboStore.add_path over HTTP into the embedded node (client hashes while it uploads, the node
imports and writes every block crash-safely); cat = KuboStore.cat_to (block/get per block, verified
on both sides). Prints MB/s and the ratio to sha256 for each.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    from gpumesh.ipfs.kubo import KuboStore
    from gpumesh.ipfs.node import EmbeddedNode
    from gpumesh.ipfs.unixfs import import_file

    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    size = mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "data.bin"
        with open(src, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1024 * 1024))

        def sha() -> None:
            h = hashlib.sha256()
            with open(src, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)

        sha()  # warm the page cache so every timing reads from memory
        base = min(_timed(sha) for _ in range(3))
        only_hash = min(_timed(lambda: import_file(src)) for _ in range(2))
        with EmbeddedNode(Path(tmp) / "repo") as node, KuboStore(node.api_multiaddr, timeout=600) as store:
            cid: list[str] = []
            add = _timed(lambda: cid.append(store.add_path(src)))
            out = Path(tmp) / "out.bin"
            with open(out, "wb") as f:
                cat = _timed(lambda: store.cat_to(cid[0], f))
            assert out.stat().st_size == size

    mbs = lambda t: size / t / 1e6  # noqa: E731
    print(f"size {mib} MiB   cid {cid[0]}")
    print(f"{'sha256 (baseline)':<28}{mbs(base):9.0f} MB/s   1.00x")
    for name, t in (("import --only-hash", only_hash), ("add via embedded node", add),
                    ("cat via embedded node", cat)):
        print(f"{name:<28}{mbs(t):9.0f} MB/s   {base / t:4.2f}x")


if __name__ == "__main__":
    main()
