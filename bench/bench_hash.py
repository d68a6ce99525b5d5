"""Tensor-root hashing speed (keccak256 via pycryptodome, as gpumesh.client.core.merkle does) vs
hashlib sha256 over the same tree, for several LEAF_BYTES, in the same run; and the on-chain side:
estimated gas of one range proof (calldata + hashing) for a 1 KiB row of a 4 MiB tensor.

    .venv/bin/python bench/bench_hash.py
"""

from __future__ import annotations

import hashlib
import os
import time

from Crypto.Hash import keccak

MB = 4 * 1024 * 1024
ROW = 1024


def kec(b: bytes) -> bytes:
    return keccak.new(data=b, digest_bits=256).digest()


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def root(data: bytes, leaf: int, h) -> bytes:
    level = [h(b"\x00" + data[i : i + leaf]) for i in range(0, len(data), leaf)]
    while len(level) > 1:
        level = [h(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def gas(leaf: int, hash_name: str) -> int:
    """Calldata (16 gas/nonzero byte, worst case) + hashing of one range proof of a ROW-byte range."""
    leaves = -(-ROW // leaf) + 1  # worst case: an unaligned row touches one more leaf
    depth = (MB // leaf).bit_length() - 1
    calldata = 16 * (leaves * leaf + 32 * 2 * depth)
    words = lambda n: -(-n // 32)  # noqa: E731
    if hash_name == "keccak":
        hashing = leaves * (30 + 6 * words(leaf + 1)) + (leaves + depth) * (30 + 6 * 3)
    else:  # sha256 precompile: 60 + 12/word, plus ~100 gas per STATICCALL
        hashing = leaves * (160 + 12 * words(leaf + 1)) + (leaves + depth) * (160 + 12 * 3)
    return calldata + hashing


def main() -> int:
    data = os.urandom(MB)
    print(f"tensor {MB >> 20} MiB; range proof of a {ROW}-byte row in a {MB >> 20} MiB tensor")
    t0 = time.perf_counter()
    hashlib.sha256(data).digest()
    base = MB / (time.perf_counter() - t0) / 1e6
    print(f"baseline: hashlib sha256 streaming {base:8.0f} MB/s")
    for leaf in (256, 512, 1024, 2048, 4096):
        out = []
        for name, h in (("keccak", kec), ("sha256", sha)):
            t0 = time.perf_counter()
            root(data, leaf, h)
            out.append((name, MB / (time.perf_counter() - t0) / 1e6))
        print(f"LEAF_BYTES {leaf:5d}: tree keccak {out[0][1]:7.0f} MB/s ({out[0][1] / base:4.2f}x baseline)  "
              f"tree sha256 {out[1][1]:7.0f} MB/s ({out[1][1] / base:4.2f}x)  "
              f"gas/proof keccak {gas(leaf, 'keccak'):7d}  sha256 {gas(leaf, 'sha256'):7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
