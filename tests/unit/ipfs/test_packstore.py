"""The embedded node's pack store on real files: durability across reopen, torn index tails and
unacknowledged appends after a crash, corruption inside a pack, gc compaction, and the migration of
a gpumesh-1 repo (one flatfs-named file per block)."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from gpumesh.ipfs import packstore
from gpumesh.ipfs.cid import CODEC_RAW, Cid
from gpumesh.ipfs.errors import CorruptBlock, IpfsError, NotFound
from gpumesh.ipfs.repo import Repo

KIB = 1024


def _blocks(n: int, size: int = 256 * KIB) -> list[tuple[Cid, bytes]]:
    out = []
    for _ in range(n):
        b = os.urandom(size)
        out.append((Cid(1, CODEC_RAW, hashlib.sha256(b).digest()), b))
    return out


def _open(path) -> Repo:
    r = Repo(path)
    r.lock()
    return r


def _add(repo: Repo, blocks) -> None:
    batch = repo.batch()
    for c, b in blocks:
        batch.put(c, b)
    batch.commit()


def test_committed_blocks_survive_reopen_and_uncommitted_ones_stay_invisible(tmp_path):
    repo = _open(tmp_path)
    done, lost = _blocks(3), _blocks(2)
    _add(repo, done)
    batch = repo.batch()
    for c, b in lost:
        batch.put(c, b)
    assert not any(repo.has(c) for c, _ in lost)  # nothing is visible before commit
    repo.unlock()  # "crash": the batch is never committed; its bytes sit unindexed in the pack

    repo = _open(tmp_path)
    assert [bytes(repo.get(c)) for c, _ in done] == [b for _, b in done]
    for c, _ in lost:
        assert not repo.has(c)
        with pytest.raises(NotFound):
            repo.get(c)
    more = _blocks(2)
    _add(repo, more)  # appended after the orphaned bytes, read back right
    assert [bytes(repo.get(c)) for c, _ in more] == [b for _, b in more]
    assert repo.size(more[0][0]) == 256 * KIB
    repo.unlock()
    assert (tmp_path / "version").read_text() == "gpumesh-2\n"


def test_a_torn_index_tail_is_ignored_and_cut_off(tmp_path):
    repo = _open(tmp_path)
    first, second = _blocks(2, 1000), _blocks(1, 1000)
    _add(repo, first)
    _add(repo, second)
    repo.unlock()
    index = tmp_path / "index"
    good = index.stat().st_size
    assert good == len(packstore.INDEX_MAGIC) + 3 * packstore.REC_SIZE
    # The last record's crc no longer matches (a torn write), and half a record follows it.
    raw = bytearray(index.read_bytes())
    raw[-3] ^= 0xFF
    index.write_bytes(bytes(raw) + b"\x01" * (packstore.REC_SIZE // 2))

    repo = _open(tmp_path)
    assert index.stat().st_size == good - packstore.REC_SIZE  # truncated at the bad record
    assert all(repo.has(c) for c, _ in first)
    assert not repo.has(second[0][0])
    again = _blocks(1, 1000)
    _add(repo, again)
    repo.unlock()
    repo = _open(tmp_path)
    assert bytes(repo.get(again[0][0])) == again[0][1]
    repo.unlock()


def test_corruption_inside_a_pack_is_reported_for_that_block_only(tmp_path):
    repo = _open(tmp_path)
    blocks = _blocks(3, 4000)
    _add(repo, blocks)
    path, offset, length = repo.locate(blocks[1][0])
    assert length == 4000
    with open(path, "r+b") as f:
        f.seek(offset + length - 1)
        last = f.read(1)[0]
        f.seek(offset + length - 1)
        f.write(bytes([last ^ 0x80]))
    with pytest.raises(CorruptBlock):
        repo.get(blocks[1][0])
    assert bytes(repo.get(blocks[0][0])) == blocks[0][1]
    assert bytes(repo.get(blocks[2][0])) == blocks[2][1]
    # A pack cut short (lost tail) is corruption too, never a short block served.
    os.truncate(path, offset + 10)
    with pytest.raises(CorruptBlock):
        repo.get(blocks[1][0])
    repo.unlock()


def test_gc_deletes_and_compacts_packs(tmp_path, monkeypatch):
    monkeypatch.setattr(packstore, "PACK_MAX", 1024 * KIB)  # 4 blocks per pack
    repo = _open(tmp_path)
    blocks = _blocks(10)
    _add(repo, blocks)
    packs = tmp_path / "packs"
    assert len(list(packs.glob("*.pack"))) == 3
    before = sum(p.stat().st_size for p in packs.glob("*.pack"))
    keep, drop = blocks[::2], blocks[1::2]
    removed = repo.gc({c.digest for c, _ in keep})
    assert {c.digest for c in removed} == {c.digest for c, _ in drop}
    after = sum(p.stat().st_size for p in packs.glob("*.pack"))
    assert after == 5 * 256 * KIB < before  # every pack held >= PACK_MAX/4 dead bytes: rewritten
    assert repo.gc({c.digest for c, _ in keep}) == []
    repo.unlock()

    repo = _open(tmp_path)
    assert [bytes(repo.get(c)) for c, _ in keep] == [b for _, b in keep]
    for c, _ in drop:
        with pytest.raises(NotFound):
            repo.get(c)
    # The index was rewritten: one record per live block.
    assert (tmp_path / "index").stat().st_size == len(packstore.INDEX_MAGIC) + 5 * packstore.REC_SIZE
    repo.delete(keep[0][0])
    with pytest.raises(NotFound):
        repo.delete(keep[0][0])
    repo.unlock()


def _flatfs_path(root, cid: Cid):
    # gpumesh-1 / Kubo flatfs naming, written out independently: base32 (RFC 4648, upper,
    # unpadded) of the multihash, in the folder named by its next-to-last two characters.
    key = base64.b32encode(b"\x12\x20" + cid.digest).decode().rstrip("=")
    return root / "blocks" / key[-3:-1] / f"{key}.data"


def test_a_gpumesh_1_repo_is_migrated(tmp_path):
    blocks = _blocks(4, 5000)
    for c, b in blocks:
        f = _flatfs_path(tmp_path, c)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b)
    bad = _flatfs_path(tmp_path, blocks[3][0])
    bad.write_bytes(b"bit rot" + bad.read_bytes()[7:])

    repo = _open(tmp_path)
    assert not (tmp_path / "blocks").exists()
    assert (tmp_path / "version").read_text() == "gpumesh-2\n"
    assert [bytes(repo.get(c)) for c, _ in blocks[:3]] == [b for _, b in blocks[:3]]
    with pytest.raises(CorruptBlock):  # moved as it was: still reported, never served
        repo.get(blocks[3][0])
    repo.unlock()


def test_an_unknown_repo_format_is_refused(tmp_path):
    (tmp_path / "version").write_text("gpumesh-9\n")
    repo = Repo(tmp_path)
    with pytest.raises(IpfsError, match="gpumesh-9"):
        repo.lock()
    (tmp_path / "version").write_text("gpumesh-2\n")
    _open(tmp_path).unlock()  # the failed open released the lock


def _fallocate_works(folder) -> bool:
    if packstore._FALLOCATE is None:
        return False
    fd = os.open(folder / "probe", os.O_RDWR | os.O_CREAT)
    try:
        return packstore._FALLOCATE(fd, 0, 4096) == 0
    finally:
        os.close(fd)


def test_reserved_disk_space_never_moves_a_packs_end(tmp_path):
    # Blocks are reserved ahead of the writes (fallocate KEEP_SIZE); the pack's size stays the
    # bytes appended, so a reopened store appends right after them, and blocks read back whole.
    store = packstore.PackStore(tmp_path)
    store.open()
    parts = (b"head", os.urandom(300_000), b"tail")
    digest = hashlib.sha256(b"".join(parts)).digest()
    txn = store.txn()
    txn.put_parts(digest, parts)
    txn.commit()
    pack = tmp_path / "packs" / "00000000.pack"
    assert pack.stat().st_size == 300_008
    if _fallocate_works(tmp_path):  # ext4, xfs, tmpfs: the reservation took
        assert pack.stat().st_blocks * 512 >= packstore.RESERVE
    store.close()
    store = packstore.PackStore(tmp_path)
    store.open()
    assert store.read(digest) == b"".join(parts)
    other = os.urandom(1000)
    txn = store.txn()
    txn.put(hashlib.sha256(other).digest(), other)
    txn.commit()
    assert store.locate(hashlib.sha256(other).digest()).offset == 300_008
    assert pack.stat().st_size == 301_008
    store.close()


def test_commit_syncs_every_pack_it_wrote_before_the_index_names_it(tmp_path, monkeypatch):
    # Records every write and fdatasync by file: each pack the transaction wrote must be synced
    # after its last write and before the index records are written (packs filled during the
    # add are synced in the background, the last one by commit itself).
    monkeypatch.setattr(packstore, "PACK_MAX", 64 * 1024)
    monkeypatch.setattr(packstore, "FLUSH_EVERY", 1 << 40)  # only the pack-full and commit syncs
    events: list[tuple[str, int]] = []
    real = {name: getattr(os, name) for name in ("pwrite", "pwritev", "fdatasync")}
    for name, fn in real.items():
        monkeypatch.setattr(os, name, lambda fd, *a, _n=name, _f=fn: (events.append((_n, fd)), _f(fd, *a))[1])
    store = packstore.PackStore(tmp_path)
    store.open()
    start = len(events)  # after the index's magic, written by open
    txn = store.txn()
    for i in range(20):
        block = os.urandom(10_000) + bytes([i])
        txn.put_parts(hashlib.sha256(block).digest(), (block[:7], block[7:]))
    txn.commit()
    index_fd = store._index_fd
    packs = {store._pack_fd(n) for n in store._pack_numbers()}
    store.close()
    assert len(packs) >= 3
    first_index_write = next(i for i, (op, fd) in enumerate(events)
                             if i >= start and op != "fdatasync" and fd == index_fd)
    for fd in packs:
        last_write = max(i for i, (op, f) in enumerate(events) if op != "fdatasync" and f == fd)
        assert any(op == "fdatasync" and f == fd for op, f in events[last_write:first_index_write])
