"""HAMT-sharded UnixFS directories as Kubo (boxo ipld/unixfs/hamt) writes them: the hash, the slot
arithmetic, building the shard blocks, and decoding/checking one shard node for the readers.

Pure (hashlib and mmh3, the MurmurHash3 C extension). Imported by gpumesh.ipfs.unixfs_dir (the importer) and gpumesh.ipfs.reader.

Rules (checked against CIDs Kubo published, tests/unit/ipfs/test_hamt_published.py):
- Key hash: MurmurHash3 x64_128 of the entry name's UTF-8 bytes, seed 0; its first 64-bit half
  (h1) written big-endian is the 8-byte hash value (spaolacci/murmur3 `New64().Sum(nil)`).
- The hash is read as a bit stream, most significant bit first; each level consumes log2(fanout)
  bits (8 for Kubo's fanout 256) as the slot index. 64 bits allow 8 levels; a deeper collision is
  an error in Kubo too.
- An entry is stored in the shortest trie: a slot holds the entry itself when no other name shares
  that slot prefix, otherwise a child shard (so the shape does not depend on insertion order).
- A shard node is dag-pb: links in ascending slot order, then
  `Data: UnixFS{Type: HAMTShard, Data: bitfield, hashType: 0x22 (murmur3), fanout: 256}`.
  Value links are named `%02X` of the slot + the entry name, with the entry's Tsize; child-shard
  links are named by the slot alone, Tsize = child block length + its links' Tsizes.
- The bitfield is a `fanout`-bit big-endian integer with bit `slot` set for each used slot,
  written without its leading zero bytes (go-bitfield `Bytes()`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import mmh3

from gpumesh.ipfs.cid import CODEC_DAG_PB, Cid
from gpumesh.ipfs.dagpb import T_HAMT_SHARD, PBLink, UnixfsData, encode_node, encode_unixfs
from gpumesh.ipfs.errors import MalformedDag, Unsupported

HASH_MURMUR3 = 0x22  # multicodec murmur3-x64-64, UnixFS Data.hashType
DEFAULT_FANOUT = 256  # boxo DefaultShardWidth
MAX_FANOUT = 1024  # boxo maximumHamtWidth
HASH_BITS = 64


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3_x64_128 (Austin Appleby's reference algorithm, the mmh3 C extension): the two
    64-bit halves (h1, h2), unsigned."""
    return mmh3.hash64(data, seed, x64arch=True, signed=False)


def key_hash(name: str) -> int:
    """The 64-bit value whose bits, most significant first, pick the slots of `name`."""
    return murmur3_x64_128(name.encode("utf-8"))[0]


def bits_per_level(fanout: int) -> int:
    """log2(fanout), for the fanouts boxo accepts (a power of two, a multiple of 8, <= 1024)."""
    if fanout < 8 or fanout > MAX_FANOUT or fanout & (fanout - 1) or fanout % 8:
        raise MalformedDag(f"HAMT fanout {fanout} is not a power of two between 8 and {MAX_FANOUT}")
    return fanout.bit_length() - 1


def slot(h: int, depth: int, width: int) -> int:
    """The slot of hash `h` at trie level `depth` (0 = root) when each level takes `width` bits."""
    shift = HASH_BITS - width * (depth + 1)
    if shift < 0:
        raise Unsupported("sharded directory too deep (names collide on all 64 hash bits)")
    return (h >> shift) & ((1 << width) - 1)


def prefix_len(fanout: int) -> int:
    """Characters of the uppercase hex slot prefix in link names (2 for fanout 256)."""
    return len(f"{fanout - 1:X}")


def bitfield_bytes(slots: list[int], fanout: int) -> bytes:
    value = 0
    for s in slots:
        value |= 1 << s
    return value.to_bytes(fanout // 8, "big").lstrip(b"\0")


# -- building ------------------------------------------------------------------------------------

Built = tuple[Cid, bytes]  # (cid, block) of one shard node


def build_shards(
    entries: list[tuple[str, Cid, int]], cid_version: int = 0, fanout: int = DEFAULT_FANOUT
) -> tuple[Cid, int, list[Built]]:
    """Kubo's HAMT over (name, cid, tsize) entries: (root cid, root Tsize, every shard block,
    children before parents, the root last)."""
    width = bits_per_level(fanout)
    pad = prefix_len(fanout)
    out: list[Built] = []
    hashed = [(key_hash(name), name, cid, tsize) for name, cid, tsize in entries]

    def build(items: list[tuple[int, str, Cid, int]], depth: int) -> tuple[Cid, int]:
        by_slot: dict[int, list[tuple[int, str, Cid, int]]] = {}
        for item in items:
            by_slot.setdefault(slot(item[0], depth, width), []).append(item)
        links: list[PBLink] = []
        for s in sorted(by_slot):
            group = by_slot[s]
            if len(group) == 1:
                _, name, cid, tsize = group[0]
                links.append(PBLink(cid, f"{s:0{pad}X}{name}", tsize))
            else:
                child_cid, child_tsize = build(group, depth + 1)
                links.append(PBLink(child_cid, f"{s:0{pad}X}", child_tsize))
        bitfield = bitfield_bytes(list(by_slot), fanout)
        data = encode_unixfs(UnixfsData(T_HAMT_SHARD, bitfield or None, hash_type=HASH_MURMUR3,
                                        fanout=fanout))
        block = encode_node(links, data)
        cid = Cid(cid_version, CODEC_DAG_PB, hashlib.sha256(block).digest())
        out.append((cid, block))
        return cid, len(block) + sum(link.tsize or 0 for link in links)

    root, tsize = build(hashed, 0)
    return root, tsize, out


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardLink:
    """One link of a decoded shard: a value (`name` set) or a child shard (`name` None)."""

    slot: int
    name: str | None
    cid: Cid
    tsize: int | None


def shard_links(cid: Cid, links: tuple[PBLink, ...], bitfield: bytes, fanout: int | None,
                hash_type: int | None) -> tuple[int, list[ShardLink]]:
    """Check one shard node against Kubo's layout; return (bits per level, its links).
    The bitfield, the link prefixes and their order must agree exactly."""
    if hash_type != HASH_MURMUR3:
        raise Unsupported(f"{cid}: HAMT hash function {hash_type} (only murmur3, 0x22, is used by Kubo)")
    if fanout is None:
        raise MalformedDag(f"{cid}: HAMT shard without a fanout")
    width = bits_per_level(fanout)
    pad = prefix_len(fanout)
    if len(bitfield) > fanout // 8:
        raise MalformedDag(f"{cid}: HAMT bitfield longer than its fanout")
    used = int.from_bytes(bitfield, "big")
    out: list[ShardLink] = []
    for link in links:
        name = link.name or ""
        prefix = name[:pad]
        if len(prefix) != pad or any(c not in "0123456789ABCDEF" for c in prefix):
            raise MalformedDag(f"{cid}: HAMT link name {name!r} has no slot prefix")
        s = int(prefix, 16)
        if s >= fanout or (out and s <= out[-1].slot) or not (used >> s) & 1:
            raise MalformedDag(f"{cid}: HAMT link {name!r} out of order or not in the bitfield")
        out.append(ShardLink(s, name[pad:] if len(name) > pad else None, link.cid, link.tsize))
    if used.bit_count() != len(out):
        raise MalformedDag(f"{cid}: HAMT bitfield marks {used.bit_count()} slots, {len(out)} links")
    return width, out


def check_value(cid: Cid, name: str, path: tuple[int, ...], width: int) -> None:
    """An entry must sit on its own hash path (or lookups and listings would disagree)."""
    h = key_hash(name)
    if any(slot(h, d, width) != s for d, s in enumerate(path)):
        raise MalformedDag(f"{cid}: HAMT entry {name!r} is stored under the wrong slot")


def check_entry_name(cid: Cid, name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise MalformedDag(f"{cid}: unsafe directory entry name {name!r}")


__all__ = [
    "DEFAULT_FANOUT",
    "HASH_MURMUR3",
    "ShardLink",
    "bitfield_bytes",
    "build_shards",
    "check_entry_name",
    "check_value",
    "key_hash",
    "murmur3_x64_128",
    "shard_links",
    "slot",
]
