"""The embedded node's multipart parser: the pipelined add receiver (gpumesh.ipfs.upload) and block/put's
reader (gpumesh.ipfs.multipart.each_part) on hand-made multipart bodies.

Property: receiving a multipart body gives the tree (entries, CIDs, blocks) that importing the same
parts directly gives (the importer is checked against Kubo's published CIDs elsewhere), however
the body's reads are cut, whatever the ring's buffer size, and whatever the part data holds
(near-delimiters). Malformed bodies and importer errors are raised, never hung on.
"""

from __future__ import annotations

import io
import random

import pytest

from gpumesh.ipfs.errors import IpfsError
from gpumesh.ipfs.multipart import (
    DIRECTORY_TYPE,
    SYMLINK_TYPE,
    OutPart,
    content_type_header,
    each_part,
    encode_parts,
)
from gpumesh.ipfs.rpc_http import ClientError, _Chunked, _Sized
from gpumesh.ipfs.unixfs import CHUNK_SIZE
from gpumesh.ipfs.unixfs_dir import TreeBuilder
from gpumesh.ipfs.upload import Rings, receive

BOUNDARY = "b0undary-7f3a"
CT = content_type_header(BOUNDARY)


class _ShortReads:
    """A body whose readinto returns 1..max_read bytes at a time (0 only at its end)."""

    def __init__(self, data: bytes, max_read: int, seed: int = 0) -> None:
        self._src = io.BytesIO(data)
        self._max = max_read
        self._rng = random.Random(seed)
        self.calls = 0

    def readinto(self, view) -> int:
        self.calls += 1
        n = self._rng.randint(1, self._max)
        return self._src.readinto(view[: min(n, len(view))])


def _parts(rng: random.Random) -> list[tuple[str, str, bytes]]:
    delim = b"\r\n--" + BOUNDARY.encode()
    tricky = b"x" * 100 + delim[:-1] + b"y" + delim[:5] + b"\r\n-" + b"\r\n--" + BOUNDARY[:-1].encode()
    return [
        ("top", DIRECTORY_TYPE, b""),
        ("top/empty", "application/octet-stream", b""),
        ("top/one", "application/octet-stream", b"a"),
        ("top/tricky", "application/octet-stream", tricky + rng.randbytes(3000) + delim[:-1]),
        ("top/sub", DIRECTORY_TYPE, b""),
        ("top/sub/chunk+1", "application/octet-stream", rng.randbytes(CHUNK_SIZE + 1)),
        ("top/sub/chunk-1", "application/octet-stream", rng.randbytes(CHUNK_SIZE - 1)),
        ("top/link", SYMLINK_TYPE, b"sub/chunk+1"),
        ("top/ends-in-crlf", "application/octet-stream", b"data\r\n\r\n--"),
    ]


def _body(parts: list[tuple[str, str, bytes]]) -> bytes:
    return b"".join(encode_parts([OutPart(p, c, [d]) for p, c, d in parts], BOUNDARY))


def _direct(parts: list[tuple[str, str, bytes]], cid_version: int) -> tuple[list, dict]:
    blocks: dict = {}
    tree = TreeBuilder(cid_version=cid_version, sink=lambda c, b: blocks.__setitem__(c, b))
    for path, ctype, data in parts:
        if ctype == DIRECTORY_TYPE:
            tree.add_dir(path)
        elif ctype == SYMLINK_TYPE:
            tree.add_symlink(path, data.decode())
        else:
            fb = tree.file()
            fb.write(data)
            tree.add_file(path, fb.finish())
    return [(e.name, e.result) for e in tree.finish()], blocks


def _received(body, cid_version: int, **kw) -> tuple[list, dict]:
    blocks: dict = {}

    def parts_sink(cid, pieces):  # what the pack store writes: the pieces, in order, now
        blocks[cid] = b"".join(bytes(p) for p in pieces)

    tree = TreeBuilder(cid_version=cid_version, sink=lambda c, b: blocks.__setitem__(c, b),
                       parts_sink=parts_sink)
    receive(body, CT, tree, **kw)
    return [(e.name, e.result) for e in tree.finish()], blocks


@pytest.mark.parametrize(("max_read", "size", "ring"), [(7, 512, 2), (1000, 4096, 3), (1 << 20, 1 << 16, 4)])
@pytest.mark.parametrize("cid_version", [0, 1])
def test_received_tree_equals_the_direct_import(max_read, size, ring, cid_version):
    rng = random.Random(max_read + cid_version)
    parts = _parts(rng)
    body = _ShortReads(_body(parts), max_read, seed=size)
    got = _received(body, cid_version, size=size, ring=ring)
    assert got == _direct(parts, cid_version)
    assert body.calls > 1


def test_preamble_epilogue_and_unnamed_parts():
    data = b"payload" * 1000
    raw = (b"a preamble line\r\n--" + BOUNDARY.encode() + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
           + data + b"\r\n--" + BOUNDARY.encode() + b"--\r\nepilogue bytes")
    body = _ShortReads(raw, 100)
    entries, _ = _received(body, 0, size=1024, ring=2)
    direct, _ = _direct([("x", "application/octet-stream", data)], 0)
    assert [(n.startswith("\0unnamed"), r) for n, r in entries] == [(True, direct[0][1])]
    assert body.readinto(memoryview(bytearray(10))) == 0  # read to its very end


def test_progress_lines_one_per_chunk_boundary_and_the_total():
    data = random.Random(1).randbytes(2 * CHUNK_SIZE + 1)
    lines = receive(_ShortReads(_body([("f", "application/octet-stream", data)]), 50_000), CT,
                    TreeBuilder(), progress=True, size=1 << 16)
    assert lines == [{"Name": "f", "Bytes": n} for n in (CHUNK_SIZE, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1)]


@pytest.mark.parametrize("cut", [10, 200, 3000])
def test_a_truncated_body_is_an_error(cut):
    raw = _body([("f", "application/octet-stream", b"z" * 4000)])
    with pytest.raises(IpfsError, match="malformed multipart"):
        receive(_ShortReads(raw[:cut], 64), CT, TreeBuilder(), size=1024, ring=2)


def test_missing_boundary_and_overlong_headers_are_errors():
    with pytest.raises(IpfsError, match="missing boundary"):
        receive(_ShortReads(b"no delimiter here" * 100, 64), CT, TreeBuilder(), size=1024, ring=2)
    long_header = (b"--" + BOUNDARY.encode() + b"\r\nX-Long: " + b"h" * 5000 + b"\r\n\r\nbody\r\n--"
                   + BOUNDARY.encode() + b"--\r\n")
    with pytest.raises(IpfsError, match="too long"):
        receive(_ShortReads(long_header, 64), CT, TreeBuilder(), size=1024, ring=2)


def test_an_importer_error_stops_the_upload_without_hanging():
    # The duplicate path fails in the importer thread while megabytes are still to come through a
    # ring of 2 small buffers: the receiver must see the error, not wait for a free buffer forever.
    parts = [("a", "application/octet-stream", b"1"), ("a", "application/octet-stream", b"2"),
             ("b", "application/octet-stream", bytes(3 << 20))]
    with pytest.raises(IpfsError, match="duplicate path"):
        receive(_ShortReads(_body(parts), 4096), CT, TreeBuilder(), size=1024, ring=2)


def _chunked(data: bytes, sizes: list[int]) -> bytes:
    out, i = [], 0
    for n in sizes:
        out.append(b"%x;ext=1\r\n" % n + data[i : i + n] + b"\r\n")
        i += n
    return b"".join(out) + b"0\r\nTrailer: x\r\n\r\nNEXT REQUEST"


def test_chunked_and_sized_bodies_read_into_views_and_stop_at_their_end():
    data = random.Random(2).randbytes(10_000)
    raw = io.BufferedReader(io.BytesIO(_chunked(data, [1, 4096, 5000, 903])))
    body = _Chunked(raw)
    got, view = bytearray(), memoryview(bytearray(3000))
    while n := body.readinto(view):
        got += view[:n]
    assert bytes(got) == data and body.done
    assert raw.read() == b"NEXT REQUEST"  # nothing past the body was consumed
    raw = io.BufferedReader(io.BytesIO(data + b"NEXT"))
    body = _Sized(raw, len(data))
    got = bytearray()
    while n := body.readinto(view):
        got += view[:n]
    assert bytes(got) == data and body.done and raw.read() == b"NEXT"


def test_a_body_that_ends_early_is_a_client_error():
    with pytest.raises(ClientError, match="truncated"):
        body = _Sized(io.BufferedReader(io.BytesIO(b"short")), 100)
        while body.readinto(memoryview(bytearray(64))):
            pass
    with pytest.raises(ClientError, match="truncated"):
        body = _Chunked(io.BufferedReader(io.BytesIO(b"64\r\nonly a few bytes")))
        while body.readinto(memoryview(bytearray(64))):
            pass


def test_a_reused_ring_never_shows_the_last_adds_bytes():
    # The node keeps its ring between adds: a body cut short right where the previous body went
    # on must fail as truncated, never be completed by the stale bytes still in the buffers.
    rings = Rings()
    raw = _body([("f", "application/octet-stream", random.Random(3).randbytes(5000))])
    receive(_ShortReads(raw, 10_000), CT, TreeBuilder(), size=4096, ring=2, rings=rings)
    for cut in (len(raw) - 20, 4100, 100):
        with pytest.raises(IpfsError, match="malformed multipart"):
            receive(_ShortReads(raw[:cut], 10_000), CT, TreeBuilder(), size=4096, ring=2, rings=rings)
    assert receive(_ShortReads(raw, 10_000), CT, TreeBuilder(), size=4096, ring=2, rings=rings) == []


@pytest.mark.parametrize(("max_read", "size"), [(7, 512), (1000, 4096), (1 << 20, 1 << 16)])
def test_block_put_parts_come_out_as_sent(max_read, size):
    # block/put reads its parts with the same parser as add, on the request's thread.
    parts = [p for p in _parts(random.Random(size)) if len(p[2]) < 5000]
    body = _ShortReads(_body(parts), max_read, seed=max_read)
    got: list[bytes] = []
    each_part(body, CT, 5000, got.append, size=size)
    assert got == [d for _, _, d in parts]
    assert body.readinto(memoryview(bytearray(10))) == 0  # read to its very end


def test_a_block_put_part_over_the_limit_or_truncated_is_an_error():
    raw = _body([("a", "application/octet-stream", b"1" * 100), ("b", "application/octet-stream", b"2" * 101)])
    got: list[bytes] = []
    with pytest.raises(IpfsError, match="over 100 bytes"):
        each_part(_ShortReads(raw, 30), CT, 100, got.append, size=1024)
    assert got == [b"1" * 100]
    with pytest.raises(IpfsError, match="malformed multipart"):
        each_part(_ShortReads(raw[:-30], 30), CT, 1000, got.append, size=1024)
