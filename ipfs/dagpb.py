"""The two protobuf encodings under every UnixFS object: dag-pb `PBNode`/`PBLink` and UnixFS `Data`.

Pure. Used by the importer (encode) and by the verified reader and the embedded node (decode).

dag-pb, as Kubo writes it (go-codec-dagpb's canonical form):
    PBLink { Hash = 1 (bytes, binary CID); Name = 2 (string); Tsize = 3 (varint) }
    PBNode { Links = 2 (repeated PBLink); Data = 1 (bytes) }
The canonical encoding writes every link BEFORE the data field, although Data has the lower field
number; links are sorted by name bytes (stable) in directories. Kubo writes Name even when it is
empty (`12 00`), and that byte pair is part of every file node's CID.
UnixFS `Data` (proto2): Type = 1, Data = 2, filesize = 3, blocksizes = 4 (repeated, unpacked),
hashType = 5, fanout = 6, mode = 7, mtime = 8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpumesh.ipfs.cid import Cid, decode_varint, encode_varint
from gpumesh.ipfs.errors import InvalidCid, MalformedDag

# UnixFS Data.Type
T_RAW = 0
T_DIRECTORY = 1
T_FILE = 2
T_METADATA = 3
T_SYMLINK = 4
T_HAMT_SHARD = 5

_WT_VARINT = 0
_WT_LEN = 2


def _key(field_no: int, wire_type: int) -> bytes:
    return encode_varint((field_no << 3) | wire_type)


def _len_field(field_no: int, payload: bytes) -> bytes:
    return _key(field_no, _WT_LEN) + encode_varint(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: Cid
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def encode_link(link: PBLink) -> bytes:
    out = _len_field(1, link.cid.to_bytes())
    if link.name is not None:
        out += _len_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _key(3, _WT_VARINT) + encode_varint(link.tsize)
    return out


def encode_node(links: tuple[PBLink, ...] | list[PBLink], data: bytes | None) -> bytes:
    """Canonical dag-pb bytes: links first (in the given order), then Data if present."""
    parts = [_len_field(2, encode_link(link)) for link in links]
    if data is not None:
        parts.append(_len_field(1, data))
    return b"".join(parts)


def _fields(buf: bytes | memoryview):
    """Yield (field_no, wire_type, value) of a protobuf message; value is int or memoryview."""
    mv = memoryview(buf)
    pos = 0
    while pos < len(mv):
        key, pos = decode_varint(mv, pos)
        field_no, wt = key >> 3, key & 7
        if wt == _WT_VARINT:
            val, pos = decode_varint(mv, pos)
            yield field_no, wt, val
        elif wt == _WT_LEN:
            n, pos = decode_varint(mv, pos)
            if pos + n > len(mv):
                raise ValueError("length-delimited field runs past the end")
            yield field_no, wt, mv[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"unexpected wire type {wt}")


def decode_node(block: bytes | memoryview) -> PBNode:
    """Strict dag-pb decode (Hash required, only known fields, Data at most once, after links)."""
    links: list[PBLink] = []
    data: bytes | None = None
    try:
        for field_no, wt, val in _fields(block):
            if field_no == 2 and wt == _WT_LEN:
                if data is not None:
                    raise ValueError("link after Data")
                links.append(_decode_link(val))
            elif field_no == 1 and wt == _WT_LEN:
                if data is not None:
                    raise ValueError("duplicate Data")
                data = bytes(val)
            else:
                raise ValueError(f"unknown PBNode field {field_no}")
    except (ValueError, InvalidCid) as exc:
        raise MalformedDag(f"not a valid dag-pb node ({exc})") from None
    return PBNode(tuple(links), data)


def _decode_link(buf: memoryview) -> PBLink:
    cid = None
    name = None
    tsize = None
    for field_no, wt, val in _fields(buf):
        if field_no == 1 and wt == _WT_LEN and cid is None:
            cid = Cid.from_bytes(bytes(val))
        elif field_no == 2 and wt == _WT_LEN and name is None:
            name = bytes(val).decode("utf-8")
        elif field_no == 3 and wt == _WT_VARINT and tsize is None:
            tsize = val
        else:
            raise ValueError(f"unexpected PBLink field {field_no}")
    if cid is None:
        raise ValueError("link without Hash")
    return PBLink(cid, name, tsize)


@dataclass(frozen=True, slots=True)
class UnixfsData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default_factory=tuple)
    hash_type: int | None = None
    fanout: int | None = None


def encode_unixfs(u: UnixfsData) -> bytes:
    out = _key(1, _WT_VARINT) + encode_varint(u.type)
    if u.data is not None:
        out += _len_field(2, u.data)
    if u.filesize is not None:
        out += _key(3, _WT_VARINT) + encode_varint(u.filesize)
    for bs in u.blocksizes:
        out += _key(4, _WT_VARINT) + encode_varint(bs)
    if u.hash_type is not None:
        out += _key(5, _WT_VARINT) + encode_varint(u.hash_type)
    if u.fanout is not None:
        out += _key(6, _WT_VARINT) + encode_varint(u.fanout)
    return out


def decode_unixfs(buf: bytes | memoryview) -> UnixfsData:
    typ = None
    data = None
    filesize = None
    blocksizes: list[int] = []
    hash_type = None
    fanout = None
    try:
        for field_no, wt, val in _fields(buf):
            if field_no == 1 and wt == _WT_VARINT:
                typ = val
            elif field_no == 2 and wt == _WT_LEN:
                data = bytes(val)
            elif field_no == 3 and wt == _WT_VARINT:
                filesize = val
            elif field_no == 4 and wt == _WT_VARINT:
                blocksizes.append(val)
            elif field_no == 4 and wt == _WT_LEN:  # packed form, legal protobuf
                pos = 0
                while pos < len(val):
                    v, pos = decode_varint(val, pos)
                    blocksizes.append(v)
            elif field_no == 5 and wt == _WT_VARINT:
                hash_type = val
            elif field_no == 6 and wt == _WT_VARINT:
                fanout = val
            elif field_no in (7, 8):  # mode / mtime: metadata that does not change the bytes
                continue
            else:
                raise ValueError(f"unknown UnixFS field {field_no}")
    except ValueError as exc:
        raise MalformedDag(f"not a valid UnixFS Data message ({exc})") from None
    if typ is None:
        raise MalformedDag("UnixFS Data without Type")
    return UnixfsData(typ, data, filesize, tuple(blocksizes), hash_type, fanout)
