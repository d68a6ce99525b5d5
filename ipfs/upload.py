"""The embedded node's `add` upload path: a multipart body parsed without copies, pipelined with the
import (chunking, sha2-256, pack appends) on a second thread.

Adapter-internal: imported only by gpumesh.ipfs.rpc.

Two threads per add. The request's thread receives: gpumesh.ipfs.multipart.Parser reads the body
straight into a ring of preallocated buffers (`readinto`: the socket's bytes land once, in place),
finds the multipart delimiters there and passes the importer memoryviews of the part bodies,
never copies. The importer thread feeds them to the
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

from gpumesh.ipfs.multipart import DATA, DIRECTORY_TYPE, PART, RELEASE, SYMLINK_TYPE, Parser
from gpumesh.ipfs.unixfs import CHUNK_SIZE
from gpumesh.ipfs.unixfs_dir import TreeBuilder

# 4 x 1 MiB: as fast as 6 x 2 MiB or 3 x 4 MiB (within 1-2%, 5 adds each, quiet machine), and the
# backlog the importer is left with when the upload ends is smaller.
RING = 4
BUFFER = 1024 * 1024
_SYMLINK_MAX = 4096


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
                if op == DATA:
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
                elif op == RELEASE:
                    self.free.put(ev[1])
                elif op == PART:
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
                if ev[0] == RELEASE:
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


def receive(body, content_type: str, tree: TreeBuilder, *, progress: bool = False,
            ring: int = RING, size: int = BUFFER, rings: Rings | None = None) -> list[dict]:
    """Read a multipart `add` body to its end into `tree` (files, directories, symlinks in upload
    order; unnamed parts are named "\\0unnamedN"). `body.readinto(view)` must return 0 only at the
    body's end. Returns the progress lines (`{"Name", "Bytes"}`) when `progress`. `rings`: where
    the buffers come from and go back to (a fresh ring if None)."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(ring):
        free.put(i)
    imp = _Importer(tree, free, progress)

    def take() -> int:  # a free buffer; the importer's error, if it failed, stops the upload
        i = free.get()
        if imp.error is not None:
            raise imp.error
        return i

    rings = rings if rings is not None else Rings()
    bufs = rings.take(ring, size)
    rx = Parser(body, content_type, bufs, take, imp.events.put)
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
