"""Fast verified file reads: internal DAG nodes block by block, leaf bytes in one ranged stream.

Pure (hashlib only), like gpumesh.ipfs.reader, whose checks it shares. Used by
gpumesh.ipfs.store.VerifyingReads when an adapter can stream a byte range of a file (KuboStore does,
through the RPC `cat` with offset/length).

Fetching every leaf with its own `block/get` costs one HTTP request per 256 KiB. Here the internal
nodes are fetched with `fetch_many` and verified as before; the leaf bytes come from ONE untrusted
`fetch_range(root, offset, length)` stream. Nothing from that stream is trusted: for each leaf the
block is rebuilt from the bytes received (a raw leaf is the bytes; a dag-pb leaf is Kubo's File
leaf frame around them, see unixfs.leaf_frame) and hashed against the leaf's CID taken from its
verified parent. A leaf is only guessed to be one when the link says so (raw codec, or a dag-pb link
whose Tsize is exactly that frame's length); whatever does not hash right, or a stream that ends
early or fails, makes the reader fall back to verified `block/get` reads for the rest of the file,
so an honest DAG of any shape is read correctly and a lying daemon never gets a byte through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from gpumesh.ipfs.cid import CODEC_RAW, Cid
from gpumesh.ipfs.dagpb import T_FILE
from gpumesh.ipfs.errors import IpfsError, MalformedDag, NotFound
from gpumesh.ipfs.reader import (
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    FetchMany,
    Node,
    _file_range,
    decode,
    fetch_one,
    file_size,
    open_file,
)
from gpumesh.ipfs.unixfs import leaf_frame

# (cid, offset, length) -> the file's bytes in that range, as chunks of any size (untrusted).
FetchRange = Callable[[Cid, int, int], Iterable[bytes]]

_SKIP_MAX = 4 * 1024 * 1024  # a gap up to this size is read through; a larger one reopens the stream


def _leaf_block_len(link_cid: Cid, size: int) -> int:
    if link_cid.codec == CODEC_RAW:
        return size
    prefix, suffix = leaf_frame(size)
    return len(prefix) + size + len(suffix)


def _looks_like_leaf(cid: Cid, tsize: int | None, size: int) -> bool:
    if size > MAX_BLOCK_SIZE:
        return False
    if cid.codec == CODEC_RAW:
        return True
    return tsize is not None and tsize == _leaf_block_len(cid, size)


def _leaf_matches(cid: Cid, data: bytes) -> bool:
    if cid.codec == CODEC_RAW:
        return hashlib.sha256(data).digest() == cid.digest
    prefix, suffix = leaf_frame(len(data))
    h = hashlib.sha256(prefix)
    h.update(data)
    h.update(suffix)
    return h.digest() == cid.digest


# Plan items: (file offset, verified bytes) for inline data, or (file offset, cid, size) for a leaf
# that the stream should carry.
def _plan(node: Node, fetch_many: FetchMany, start: int, end: int | None, base: int,
          depth: int) -> Iterator[tuple]:
    if depth > MAX_DEPTH:
        raise MalformedDag("DAG deeper than the depth limit")
    pos = 0
    if node.data:
        a, b = max(start, 0), len(node.data) if end is None else min(end, len(node.data))
        if a < b:
            yield (base + a, node.data[a:b])
        pos = len(node.data)
    wanted = []
    for link, size in zip(node.links, node.blocksizes, strict=True):
        lo, hi = pos, pos + size
        pos = hi
        if hi <= start or (end is not None and lo >= end):
            continue
        wanted.append((lo, link, size, _looks_like_leaf(link.cid, link.tsize, size)))
    # Internal children are fetched (lazily, in a prefetch window) and verified as reader does.
    blocks = iter(fetch_many([link.cid for _, link, _, leaf in wanted if not leaf]))
    for lo, link, size, leaf in wanted:
        if leaf:
            yield (base + lo, link.cid, size)
            continue
        block = next(blocks, None)
        if block is None:
            raise NotFound(f"block {link.cid} not found")
        child = decode(link.cid, block)
        if child.kind != T_FILE:
            raise MalformedDag(f"{link.cid}: a file links to a non-file node")
        if file_size(child) != size:
            raise MalformedDag(f"{link.cid}: holds {file_size(child)} bytes, parent declared {size}")
        yield from _plan(child, fetch_many, max(start - lo, 0), None if end is None else end - lo,
                         base + lo, depth + 1)


class _Stream:
    """Exact-size reads over an iterator of chunks; remembers its file offset."""

    def __init__(self, chunks: Iterable[bytes], pos: int) -> None:
        self._src = chunks
        self._it = iter(chunks)
        self._buf = bytearray()
        self.pos = pos

    def read(self, n: int) -> bytes:
        buf = self._buf
        if not buf:  # the usual case: the server sends one leaf's bytes per chunk, so no copy
            chunk = next(self._it, None)
            if chunk is None:
                return b""
            if len(chunk) == n:
                self.pos += n
                return bytes(chunk)
            buf += chunk
        while len(buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                break
            buf += chunk
        with memoryview(buf) as mv:
            out = bytes(mv[:n])
        del buf[:n]
        self.pos += len(out)
        return out

    def close(self) -> None:
        close = getattr(self._src, "close", None)
        if close is not None:
            close()


def iter_file_ranged(cid: Cid, fetch_many: FetchMany, fetch_range: FetchRange, offset: int = 0,
                     length: int | None = None, root: Node | None = None) -> Iterator[bytes]:
    """Same bytes and the same guarantees as reader.iter_file, with leaves read from `fetch_range`."""
    root = open_file(cid, fetch_many, offset, length, root)
    total = file_size(root)
    end = None if length is None else offset + length
    # The stream must cover whole leaves: read past `end` by at most one block.
    stream_end = total if end is None else min(total, end + MAX_BLOCK_SIZE)
    stream: _Stream | None = None
    ranged = True
    try:
        for item in _plan(root, fetch_many, offset, end, 0, 0):
            if len(item) == 2:  # verified inline data
                yield item[1]
                continue
            lo, leaf_cid, size = item
            a = max(offset - lo, 0)
            b = size if end is None else min(size, end - lo)
            data = None
            if ranged:
                try:
                    if stream is not None and not (0 <= lo - stream.pos <= _SKIP_MAX):
                        stream.close()
                        stream = None
                    if stream is None:
                        stream = _Stream(fetch_range(cid, lo, stream_end - lo), lo)
                    while stream.pos < lo:
                        if not stream.read(min(lo - stream.pos, 1 << 20)):
                            break
                    got = stream.read(size) if stream.pos == lo else b""
                except IpfsError:
                    got = b""
                if len(got) == size and _leaf_matches(leaf_cid, got):
                    data = got
                else:  # a lie, a short or failed stream, or a leaf of another shape: stop trusting it
                    ranged = False
                    if stream is not None:
                        stream.close()
                        stream = None
            if data is not None:
                yield data if (a, b) == (0, size) else data[a:b]
                continue
            child = decode(leaf_cid, fetch_one(fetch_many, leaf_cid))
            if child.kind != T_FILE:
                raise MalformedDag(f"{leaf_cid}: a file links to a non-file node")
            if file_size(child) != size:
                raise MalformedDag(f"{leaf_cid}: holds {file_size(child)} bytes, parent declared {size}")
            yield from _file_range(child, fetch_many, a, b, 1)
    finally:
        if stream is not None:
            stream.close()


__all__ = ["FetchRange", "iter_file_ranged"]
