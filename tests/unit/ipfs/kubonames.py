"""Kubo's test/cli/testutils name generator, rebuilt for test vectors only (test-only helper).

cid_profiles_test.go names its HAMT boundary files with `createDeterministicFiles`: a ChaCha20
keystream (key = sha256(seed), 12-byte zero nonce, counter from 0) read name_len bytes per name,
each byte mapped to AlphabetEasy[b % 39]. Checked against RFC 8439 vectors in
test_hamt_published.py, and by the flat-directory CID Kubo published for the same names.
"""

from __future__ import annotations

import hashlib
import struct


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    def rotl(v: int, n: int) -> int:
        return ((v << n) | (v >> (32 - n))) & 0xFFFFFFFF

    def qr(s: list[int], a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)

    init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), counter,
            *struct.unpack("<3I", nonce)]
    s = list(init)
    for _ in range(10):
        qr(s, 0, 4, 8, 12), qr(s, 1, 5, 9, 13), qr(s, 2, 6, 10, 14), qr(s, 3, 7, 11, 15)
        qr(s, 0, 5, 10, 15), qr(s, 1, 6, 11, 12), qr(s, 2, 7, 8, 13), qr(s, 3, 4, 9, 14)
    return struct.pack("<16I", *((a + b) & 0xFFFFFFFF for a, b in zip(s, init, strict=True)))


def chacha20_stream(key: bytes, n: int) -> bytes:
    out = b"".join(chacha20_block(key, i, bytes(12)) for i in range((n + 63) // 64))
    return out[:n]


ALPHABET_EASY = "abcdefghijklmnopqrstuvwxyz01234567890-_"  # testutils.AlphabetEasy (39 runes)


def kubo_hamt_names(seed: str, count: int, name_len: int) -> list[str]:
    """createDeterministicFiles' names: name_len keystream bytes per name, each mod 39."""
    stream = chacha20_stream(hashlib.sha256(seed.encode()).digest(), count * name_len)
    return ["".join(ALPHABET_EASY[b % len(ALPHABET_EASY)] for b in stream[i * name_len:(i + 1) * name_len])
            for i in range(count)]
