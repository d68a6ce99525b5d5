"""Content identifiers: varints, multihash (sha2-256), multibase (base58btc, base32) and the `Cid` value.

Pure (hashlib only). Imported by every module of gpumesh.ipfs and by anyone who needs to parse or
print a CID. Only sha2-256 multihashes are accepted: a CID whose hash this layer cannot recompute
cannot be verified, so it is refused (InvalidCid) rather than trusted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gpumesh.ipfs.errors import CidMismatch, InvalidCid

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
MH_SHA2_256 = 0x12
SHA2_256_LEN = 32

_B58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_INDEX = {c: i for i, c in enumerate(_B32)}


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, next position); refuses truncated and over-long (> 9 bytes) varints."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if pos - start >= 9:
            raise ValueError("varint too long")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def b58decode(s: str) -> bytes:
    n = 0
    for ch in s.encode("ascii"):
        if ch not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {chr(ch)!r}")
        n = n * 58 + _B58_INDEX[ch]
    pad = len(s) - len(s.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase 'b')."""
    n = int.from_bytes(data, "big")
    bits = len(data) * 8
    pad = (-bits) % 5
    n <<= pad
    count = (bits + pad) // 5
    return "".join(_B32[(n >> (5 * (count - 1 - i))) & 31] for i in range(count))


def b32decode(s: str) -> bytes:
    n = 0
    for ch in s:
        if ch not in _B32_INDEX:
            raise ValueError(f"invalid base32 character {ch!r}")
        n = (n << 5) | _B32_INDEX[ch]
    bits = len(s) * 5
    nbytes = bits // 8
    extra = bits - nbytes * 8
    if n & ((1 << extra) - 1):
        raise ValueError("non-zero base32 padding bits")
    return (n >> extra).to_bytes(nbytes, "big")


@dataclass(frozen=True, slots=True)
class Cid:
    """A CIDv0 (dag-pb, base58btc) or CIDv1 (raw or dag-pb, printed base32) over a sha2-256 digest."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"unknown CID version {self.version}")
        if self.version == 0 and self.codec != CODEC_DAG_PB:
            raise InvalidCid("a CIDv0 is always dag-pb")
        if self.codec not in (CODEC_RAW, CODEC_DAG_PB):
            raise InvalidCid(f"unsupported codec 0x{self.codec:x} (only dag-pb and raw)")
        if len(self.digest) != SHA2_256_LEN:
            raise InvalidCid("digest must be 32 bytes of sha2-256")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def of_block(cls, data: bytes | memoryview, *, version: int = 0, codec: int = CODEC_DAG_PB) -> Cid:
        return cls(version, codec, hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string (CIDv0 'Qm...', multibase 'b' base32, 'z' base58btc, 'f' base16).

        A leading '/ipfs/' is accepted, as Kubo accepts it.
        """
        s = text.strip()
        if s.startswith("/ipfs/"):
            s = s[len("/ipfs/") :]
        if "/" in s:
            raise InvalidCid(f"{text!r} is a path, not a CID")
        try:
            if len(s) == 46 and s.startswith("Qm"):
                raw = b58decode(s)
            elif s[:1] == "b":
                raw = b32decode(s[1:])
            elif s[:1] == "B":
                raw = b32decode(s[1:].lower())
            elif s[:1] == "z":
                raw = b58decode(s[1:])
            elif s[:1] == "f":
                raw = bytes.fromhex(s[1:])
            else:
                raise ValueError("unknown multibase prefix")
            return cls.from_bytes(raw)
        except (ValueError, IndexError) as exc:
            raise InvalidCid(f"{text!r} is not a valid CID ({exc})") from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Cid:
        """Binary CID (as inside dag-pb links): v0 = bare multihash, v1 = version, codec, multihash."""
        raw = bytes(raw)
        if len(raw) == 34 and raw[0] == MH_SHA2_256 and raw[1] == SHA2_256_LEN:
            return cls(0, CODEC_DAG_PB, raw[2:])
        try:
            version, pos = decode_varint(raw, 0)
            if version != 1:
                raise InvalidCid(f"unknown CID version {version}")
            codec, pos = decode_varint(raw, pos)
            mh_code, pos = decode_varint(raw, pos)
            mh_len, pos = decode_varint(raw, pos)
        except ValueError as exc:
            raise InvalidCid(f"malformed binary CID ({exc})") from None
        if mh_code != MH_SHA2_256 or mh_len != SHA2_256_LEN:
            raise InvalidCid(f"unsupported multihash 0x{mh_code:x}/{mh_len} (only sha2-256 is verifiable)")
        if len(raw) - pos != SHA2_256_LEN:
            raise InvalidCid("binary CID has a wrong digest length")
        return cls(1, codec, raw[pos:])

    # -- encoding ------------------------------------------------------------------------------
    @property
    def multihash(self) -> bytes:
        return bytes((MH_SHA2_256, SHA2_256_LEN)) + self.digest

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.digest)

    # -- verification --------------------------------------------------------------------------
    def matches(self, data: bytes | memoryview) -> bool:
        return hashlib.sha256(data).digest() == self.digest

    def verify(self, data: bytes | memoryview) -> None:
        """Raise CidMismatch unless `data` hashes to this CID."""
        if not self.matches(data):
            raise CidMismatch(f"block data does not match its CID {self}")


def as_cid(value: str | Cid) -> Cid:
    return value if isinstance(value, Cid) else Cid.parse(value)
