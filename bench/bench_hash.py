"""Tensor-root hashing speed vs hashlib sha256 in the same run, for several LEAF_BYTES, and the
on-chain side: estimated gas of one range proof (calldata + hashing) for a 1 KiB row of a 4 MiB
tensor. Keccak variants of the off-chain tree:
  - wrapper: pycryptodome's `keccak.new(...).digest()` per node;
  - merkle:  gpumesh.client.core.merkle's keccak256 (safe-pysha3's C keccak_256) per node;
  - numpy:   keccak-f[1600] vectorised over all leaves at once (lanes as uint64 [25, n]), leaves
             only (an experiment: checked equal to pycryptodome, then timed).

    .venv/bin/python bench/bench_hash.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from Crypto.Hash import keccak

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpumesh.client.core import merkle  # noqa: E402
from gpumesh.client.core.constants import LEAF_BYTES  # noqa: E402

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


# --- keccak-f[1600] over many states at once (numpy) ---------------------------------------------
_ROT = np.array([[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56],
                 [27, 20, 39, 8, 14]], dtype=np.uint64)  # _ROT[x][y]
_RC: list[int] = []
_r = 1
for _ in range(24):
    _c = 0
    for _j in range(7):
        _r = ((_r << 1) ^ ((_r >> 7) * 0x71)) % 256
        if _r & 2:
            _c ^= 1 << ((1 << _j) - 1)
    _RC.append(_c)
_RC_NP = np.array(_RC, dtype=np.uint64)
# lane index i = x + 5y; rho+pi sends lane (x, y) rotated by r[x][y] to (y, 2x + 3y)
_SRC = np.empty(25, dtype=np.int64)
_R = np.empty(25, dtype=np.uint64)
for _x in range(5):
    for _y in range(5):
        _SRC[_y + 5 * ((2 * _x + 3 * _y) % 5)] = _x + 5 * _y
        _R[_x + 5 * _y] = _ROT[_x][_y]
_RL, _RR = _R.reshape(25, 1), ((np.uint64(64) - _R) % np.uint64(64)).reshape(25, 1)


def keccak_f(a: np.ndarray) -> np.ndarray:
    """a: uint64 [25, n] (lane x + 5y, little-endian lanes); returns the permuted states."""
    one, s63 = np.uint64(1), np.uint64(63)
    for rc in _RC_NP:
        a3 = a.reshape(5, 5, -1)  # [y, x, n]
        c = a3[0] ^ a3[1] ^ a3[2] ^ a3[3] ^ a3[4]
        d = np.roll(c, 1, axis=0) ^ ((np.roll(c, -1, axis=0) << one) | (np.roll(c, -1, axis=0) >> s63))
        a = (a3 ^ d[None]).reshape(25, -1)
        b = ((a << _RL) | (a >> _RR))[_SRC].reshape(5, 5, -1)
        a = (b ^ (~np.roll(b, -1, axis=1) & np.roll(b, -2, axis=1))).reshape(25, -1)
        a[0] ^= rc
    return a


def numpy_leaf_hashes(data: bytes, leaf: int) -> list[bytes]:
    """keccak256(0x00 || leaf) of every leaf of `data` (len a multiple of `leaf`), vectorised."""
    n = len(data) // leaf
    msg_len = leaf + 1
    blocks = -(-(msg_len + 1) // 136)
    buf = np.zeros((n, blocks * 136), dtype=np.uint8)
    buf[:, 1:msg_len] = np.frombuffer(data, dtype=np.uint8).reshape(n, leaf)
    buf[:, msg_len] ^= 0x01
    buf[:, -1] ^= 0x80
    lanes = buf.view("<u8").reshape(n, blocks, 17)
    a = np.zeros((25, n), dtype=np.uint64)
    for k in range(blocks):
        a[:17] ^= lanes[:, k, :].T
        a = keccak_f(a)
    out = np.ascontiguousarray(a[:4].T).astype("<u8").tobytes()
    return [out[i * 32 : (i + 1) * 32] for i in range(n)]


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


def _rate(fn, nbytes: int, repeat: int) -> tuple[float, float]:
    rs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        rs.append(nbytes / (time.perf_counter() - t0) / 1e6)
    return max(rs), statistics.median(rs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = os.urandom(MB)
    print(f"tensor {MB >> 20} MiB; range proof of a {ROW}-byte row; load average {os.getloadavg()}")
    small = os.urandom(64 * LEAF_BYTES)
    assert numpy_leaf_hashes(small, LEAF_BYTES) == [kec(b"\x00" + small[i : i + LEAF_BYTES])
                                                   for i in range(0, len(small), LEAF_BYTES)]
    assert merkle.tensor_root(data) == root(data, LEAF_BYTES, kec)
    base, base_med = _rate(lambda: hashlib.sha256(data).digest(), MB, args.repeat)
    print(f"baseline: hashlib sha256 streaming {base:8.0f} MB/s (median {base_med:.0f})")
    for leaf in (256, 512, 1024, 2048, 4096):
        wr = _rate(lambda leaf=leaf: root(data, leaf, kec), MB, args.repeat)
        sh = _rate(lambda leaf=leaf: root(data, leaf, sha), MB, args.repeat)
        fast = _rate(lambda leaf=leaf: root(data, leaf, merkle.keccak256), MB, args.repeat)
        print(f"LEAF_BYTES {leaf:5d}: keccak tree wrapper {wr[0]:5.0f} MB/s  merkle {fast[0]:5.0f} MB/s "
              f"(median {fast[1]:4.0f}; {fast[0] / base:4.2f}x baseline)  sha256 tree {sh[0]:5.0f} MB/s  "
              f"gas/proof keccak {gas(leaf, 'keccak'):7d}  sha256 {gas(leaf, 'sha256'):7d}", flush=True)
    mk = _rate(lambda: merkle.tensor_root(data), MB, args.repeat)
    print(f"merkle.tensor_root (LEAF_BYTES {LEAF_BYTES}): {mk[0]:.0f} MB/s (median {mk[1]:.0f})")
    npl = _rate(lambda: numpy_leaf_hashes(data, LEAF_BYTES), MB, 1)
    rawl = _rate(lambda: [merkle.keccak256(b"\x00" + data[i : i + LEAF_BYTES]) for i in range(0, MB, LEAF_BYTES)],
                 MB, args.repeat)
    print(f"leaf hashes only, {MB // LEAF_BYTES} leaves: numpy-vectorised keccak-f {npl[0]:.1f} MB/s  "
          f"merkle.keccak256 {rawl[0]:.0f} MB/s  ({rawl[0] / npl[0]:.0f}x)")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
