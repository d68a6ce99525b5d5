"""Before/after of the two hashing swaps, interleaved in one process (best of ROUNDS each):
  - keccak256: merkle.py as it was (ctypes calls into pycryptodome's private _keccak symbols) vs now
    (safe-pysha3's keccak_256), on a tree node, a leaf, hash_rows and a 4 MiB tensor_root;
  - HAMT key hash: hamt.py as it was (pure-Python MurmurHash3_x64_128) vs now (mmh3), per name.
The previous modules are read from git (the commit before the swap), so this needs the checkout's
history. Outputs are checked equal before timing.

    .venv/bin/python bench/bench_hash_swap.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gpumesh.client.core import merkle  # noqa: E402
from gpumesh.ipfs import hamt  # noqa: E402

BEFORE = "2d4522a^"  # the commit before the swap


def _old(path: str, name: str):
    text = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout
    f = Path(tempfile.mkdtemp()) / f"{name}.py"
    f.write_text(text)
    spec = importlib.util.spec_from_file_location(name, f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _ab(name: str, before, after, number: int, rounds: int) -> None:
    b = a = float("inf")
    for _ in range(rounds):
        b = min(b, timeit.timeit(before, number=number) / number)
        a = min(a, timeit.timeit(after, number=number) / number)
    print(f"{name:34s} before {b * 1e6:10.2f} us   after {a * 1e6:10.2f} us   ({b / a:5.2f}x)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    r = ap.parse_args().rounds
    old_m, old_h = _old("client/core/merkle.py", "merkle_before"), _old("ipfs/hamt.py", "hamt_before")
    node, leaf = bytes(65), bytes(range(256)) * 4 + b"\x00"
    rows = np.frombuffer(np.random.default_rng(1).bytes(4096 * 1025), np.uint8).reshape(4096, 1025).copy()
    data = os.urandom(4 << 20)
    names = [f"file-{i:06d}.safetensors" for i in range(2000)]
    assert old_m.keccak256(leaf) == merkle.keccak256(leaf) and old_m.tensor_root(data) == merkle.tensor_root(data)
    assert (old_m.hash_rows(rows) == merkle.hash_rows(rows)).all()
    assert [old_h.key_hash(n) for n in names] == [hamt.key_hash(n) for n in names]
    print(f"load average {os.getloadavg()}; previous code from {BEFORE}")
    _ab("keccak256, 65 B (a tree node)", lambda: old_m.keccak256(node), lambda: merkle.keccak256(node), 20000, r)
    _ab("keccak256, 1025 B (a leaf)", lambda: old_m.keccak256(leaf), lambda: merkle.keccak256(leaf), 5000, r)
    _ab("hash_rows, 4096 x 1025 B", lambda: old_m.hash_rows(rows), lambda: merkle.hash_rows(rows), 2, r)
    _ab("tensor_root, 4 MiB", lambda: old_m.tensor_root(data), lambda: merkle.tensor_root(data), 1, r)
    _ab("HAMT key_hash, per name", lambda: [old_h.key_hash(n) for n in names],
        lambda: [hamt.key_hash(n) for n in names], 5, r)
    print("(HAMT row: the time of 2,000 names; divide by 2,000 for one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
