"""Integer arithmetic of docs/protocol.md 2.1: wrap32, clamp, round-half-up requantization.

Pure Python integers (arbitrary precision), so these ARE the mathematical definitions; the torch
kernels and the Solidity verifier must agree with them. Anyone may import this module.
"""

from __future__ import annotations

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap32(v: int) -> int:
    """The int32 congruent to v mod 2^32 (two's-complement wrap-around)."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def round_shift(v: int, shift: int) -> int:
    """floor((v + 2^(shift-1)) / 2^shift): division by 2^shift, ties toward +infinity.
    Python's >> on negative ints is an arithmetic (floor) shift, as in int64 hardware and int256."""
    return (v + (1 << (shift - 1))) >> shift


def requant(acc: int, mult: int, shift: int, zp: int, lo: int, hi: int) -> int:
    return clamp(round_shift(acc * mult, shift) + zp, lo, hi)


def add_rescaled(a: int, b: int, za: int, zb: int, ma: int, mb: int, shift: int, zy: int, lo: int, hi: int) -> int:
    return clamp(round_shift((a - za) * ma + (b - zb) * mb, shift) + zy, lo, hi)


def from_le(b: bytes, width: int) -> list[int]:
    """Signed little-endian elements of `width` bytes each."""
    return [int.from_bytes(b[i : i + width], "little", signed=True) for i in range(0, len(b), width)]


def to_le(v: int, width: int) -> bytes:
    return v.to_bytes(width, "little", signed=True)
