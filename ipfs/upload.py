"""The embedded node's `add` upload path: a multipart body parsed without copies, pipelined with the
import (chunking, sha2-256, pack appends) on a second thread.

Adapter-internal: imported only by gpumesh.ipfs.rpc.

Two threads per add. The request's thread receives: it reads the body straight into a ring of
preallocated buffers (`readinto`: the socket's bytes land once, in place), finds the multipart
delimiters there (`mmap.find` over the filled region; a byte is searched about once: only the
last len(delimiter)-1 bytes of a region are searched again, after the next read) and passes the
importer memoryviews of the part bodies, never copies. The importer thread feeds them to the
TreeBuilder, whose pack sink writes each leaf with one pwritev (frame + view), and hands each
buffer back to the ring once it is past it. recv_into, sha2-256 and pwritev release the GIL on
large buffers, so receiving and hashing run on two cores at once. The ring (RING buffers of
BUFFER bytes) bounds memory and makes a fast sender wait for a slow importer.

Failures: a malformed or truncated body (a client that hangs up) raises in the receiver, which
stops the importer and re-raises; an importer error (a bad path, a full disk) stops the receiver at
its next buffer. Either way nothing was committed: the caller aborts its batch.
"""

from __future__ import annotations

import mmap
import queue
import threading

from gpumesh.ipfs.errors import IpfsError
from gpumesh.ipfs.multipart import DIRECTORY_TYPE, SYMLINK_TYPE, add_header, boundary_of, part_meta
from gpumesh.ipfs.unixfs import CHUNK_SIZE
from gpumesh.ipfs.unixfs_dir import TreeBuilder

# 4 x 1 MiB: as fast as 6 x 2 MiB or 3 x 4 MiB (within 1-2%, 5 adds each, quiet machine), and the
# backlog the importer is left with when the upload ends is smaller.
RING = 4
BUFFER = 1024 * 1024
HEADERS_MAX = 64 * 1024  # one part's header block
_SYMLINK_MAX = 4096
_DATA, _RELEASE, _PART, _END = 0, 1, 2, 3


class _Importer:
    """The importer thread's side: events in upload order, buffers back to the ring."""

    def __init__(self, tree: TreeBuilder, free: queue.SimpleQueue, progress: bool) -> None:
        self.tree = tree
        self.free = free
        self.progress = progress
        self.lines: list[dict] = []
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None

    def run(self) -> None:
        get = self.events.get
        fb = None
        path = kind = ""
        link = bytearray()
        done = shown = 0
        try:
            while (ev := get()) is not None:
                op = ev[0]
                if op == _DATA:
                    if fb is not None:
                        fb.write(ev[1])
                        done += len(ev[1])
                        if self.progress and done - shown >= CHUNK_SIZE:
                            # One line per chunk boundary crossed (Kubo's progress granularity).
                            while shown + CHUNK_SIZE <= done:
                                shown += CHUNK_SIZE
                                self.lines.append({"Name": path, "Bytes": shown})
                    elif kind == SYMLINK_TYPE and len(link) <= _SYMLINK_MAX:
                        link += ev[1][: _SYMLINK_MAX + 1 - len(link)]
                elif op == _RELEASE:
                    self.free.put(ev[1])
                elif op == _PART:
                    _, path, kind = ev
                    fb, link, done, shown = None, bytearray(), 0, 0
                    if kind == DIRECTORY_TYPE:
                        self.tree.add_dir(path)
                    elif kind != SYMLINK_TYPE:
                        fb = self.tree.file()
                else:  # _END of a part
                    if fb is not None:
                        if self.progress and done > shown:
                            self.lines.append({"Name": path, "Bytes": done})
                        self.tree.add_file(path, fb.finish())
                    elif kind == SYMLINK_TYPE:
                        self.tree.add_symlink(path, bytes(link[:_SYMLINK_MAX]).decode("utf-8"))
                    fb = None
        except BaseException as exc:  # noqa: BLE001 - handed to the receiver, which re-raises it
            self.error = exc
            while ev is not None:  # keep the ring turning so the receiver can see the error
                if ev[0] == _RELEASE:
                    self.free.put(ev[1])
                ev = get()


class Rings:
    """Keeps the ring of the last add for the next one (one node serialises its adds), so neither
    mapping nor unmapping it (~3 ms for a 12 MiB ring's touched pages) is on an add's path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[mmap.mmap] | None = None

    def take(self, ring: int, size: int) -> list[mmap.mmap]:
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None and len(kept) == ring and len(kept[0]) == size:
            return kept
        # Anonymous maps, not bytearrays: bytearray(n) zero-fills with the GIL held (~5 ms for a
        # 12 MiB ring, stalling the client's thread in the same process); a map's pages are zeroed by
        # the kernel on their first write, inside recv_into, with the GIL released.
        return [mmap.mmap(-1, size) for _ in range(ring)]

    def give(self, bufs: list[mmap.mmap]) -> None:
        with self._lock:
            self._kept = bufs


class _Receiver:
    """The request thread's side: body -> ring buffers -> part events."""

    def __init__(self, body, boundary: str, imp: _Importer, bufs: list[mmap.mmap]) -> None:
        size = len(bufs[0])
        self._body = body
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        if not boundary or 4 * len(self._delim) > size:
            raise IpfsError("multipart boundary is empty or too long")
        self._imp = imp
        self._put = imp.events.put
        self._bufs = bufs
        self._views = [memoryview(b) for b in bufs]
        self._headers_max = min(HEADERS_MAX, size // 2)
        self._cur = imp.free.get()
        self._start = self._end = 0
        self._eof = False
        self._unnamed = 0

    def release(self) -> None:
        for v in self._views:
            v.release()

    def _more(self) -> bool:
        """Read more of the body after what is unconsumed; False at its end."""
        if self._eof:
            return False
        if self._end == len(self._bufs[self._cur]):
            # Full: carry the unconsumed tail (< one delimiter, or a partial header block) into the
            # next free buffer and give this one back once the importer is past its views.
            nxt = self._imp.free.get()
            if self._imp.error is not None:
                raise self._imp.error
            k = self._end - self._start
            self._views[nxt][:k] = self._views[self._cur][self._start : self._end]
            self._put((_RELEASE, self._cur))
            self._cur, self._start, self._end = nxt, 0, k
        n = self._body.readinto(self._views[self._cur][self._end :])
        if not n:
            self._eof = True
            return False
        self._end += n
        return True

    def _need(self, n: int) -> bool:
        while self._end - self._start < n:
            if not self._more():
                return False
        return True

    def _find(self, what: bytes) -> int:
        """Position of `what` at or after start, reading on as needed; -1 at the body's end."""
        rel = 0  # offset from start already searched (start moves when the buffer changes)
        while True:
            i = self._bufs[self._cur].find(what, self._start + rel, self._end)
            if i >= 0:
                return i
            if self._end - self._start > self._headers_max:
                raise IpfsError("malformed multipart body (a header line is too long)")
            rel = max(self._end - self._start - len(what) + 1, 0)
            if not self._more():
                return -1

    def run(self) -> None:
        dl = len(self._delim)
        # The first delimiter has no CRLF before it when there is no preamble.
        if self._need(dl - 2) and self._bufs[self._cur][self._start : self._start + dl - 2] == self._delim[2:]:
            self._start += dl - 2
        elif not self._skip_body(emit=False):
            raise IpfsError("malformed multipart body (missing boundary)")
        while True:
            if not self._need(2):
                raise IpfsError("malformed multipart body")
            buf = self._bufs[self._cur]
            if buf[self._start : self._start + 2] == b"--":
                while self._more():  # the epilogue: read to the end so the connection can be reused
                    self._start = self._end
                return
            i = self._find(b"\r\n")  # the rest of the delimiter line
            if i < 0:
                raise IpfsError("malformed multipart body")
            self._start = i + 2
            path, ctype = self._headers()
            self._put((_PART, path, ctype))
            if not self._skip_body(emit=True):
                raise IpfsError("malformed multipart body (truncated part)")
            self._put((_END,))

    def _headers(self) -> tuple[str, str]:
        fields: dict[str, str] = {}
        while True:
            i = self._find(b"\r\n")
            if i < 0:
                raise IpfsError("malformed multipart part headers")
            line = bytes(self._bufs[self._cur][self._start : i]).decode("utf-8", "replace")
            self._start = i + 2
            if not line:
                break
            add_header(fields, line)
        path, ctype = part_meta(fields)
        if not path:
            self._unnamed += 1
            path = f"\0unnamed{self._unnamed}"
        return path, ctype

    def _skip_body(self, emit: bool) -> bool:
        """Pass the bytes up to the next delimiter to the importer (emit) or drop them; consume the
        delimiter. False if the body ends first."""
        delim, dl = self._delim, len(self._delim)
        while True:
            buf, start, end = self._bufs[self._cur], self._start, self._end
            i = buf.find(delim, start, end)
            if i >= 0:
                if emit and i > start:
                    self._put((_DATA, self._views[self._cur][start:i]))
                self._start = i + dl
                return True
            safe = end - dl + 1  # the last dl-1 bytes may begin a delimiter: keep them
            if safe > start:
                if emit:
                    self._put((_DATA, self._views[self._cur][start:safe]))
                self._start = safe
            if not self._more():
                return False


def receive(body, content_type: str, tree: TreeBuilder, *, progress: bool = False,
            ring: int = RING, size: int = BUFFER, rings: Rings | None = None) -> list[dict]:
    """Read a multipart `add` body to its end into `tree` (files, directories, symlinks in upload
    order; unnamed parts are named "\\0unnamedN"). `body.readinto(view)` must return 0 only at the
    body's end. Returns the progress lines (`{"Name", "Bytes"}`) when `progress`. `rings`: where
    the buffers come from and go back to (a fresh ring if None)."""
    boundary = boundary_of(content_type)
    free: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(ring):
        free.put(i)
    imp = _Importer(tree, free, progress)
    rings = rings if rings is not None else Rings()
    bufs = rings.take(ring, size)
    rx = _Receiver(body, boundary, imp, bufs)
    worker = threading.Thread(target=imp.run, name="ipfs-add-import", daemon=True)
    worker.start()
    try:
        rx.run()
    finally:
        imp.events.put(None)
        worker.join()
        rx.release()
        rings.give(bufs)
    if imp.error is not None:
        raise imp.error
    return imp.lines


__all__ = ["BUFFER", "RING", "Rings", "receive"]
