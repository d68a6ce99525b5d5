"""Workers walk the open jobs in orders of their own (keccak of address and job id), so a mesh of
workers does not claim the same open shard in the same block; the jobs a worker holds come first,
in id order."""

from __future__ import annotations

from types import SimpleNamespace

from gpumesh.node.worker.node import WorkerNode


def _walk(addr: str, jobs: dict) -> list[int]:
    me = SimpleNamespace(me=addr)
    return [int(k) for k in sorted(jobs, key=lambda k: WorkerNode._order(me, k, jobs[k]))]


def test_held_jobs_first_in_id_order_then_open_ones_in_an_own_order():
    jobs = {str(i): {"status": "new"} for i in range(1, 41)}
    jobs["30"] = {"status": "submitted"}
    jobs["7"] = {"status": "claimed"}
    a = _walk("0x" + "11" * 20, jobs)
    b = _walk("0x" + "22" * 20, jobs)
    assert a[:2] == b[:2] == [7, 30]
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert a[2:] != sorted(a[2:]), "not the id order"
    assert a[2:] != b[2:], "two workers walk the open jobs differently"
    # 16 workers: the first open job each would try is spread over many jobs, not all the same
    firsts = {_walk("0x" + f"{i:040x}", jobs)[2] for i in range(1, 17)}
    assert len(firsts) >= 10, firsts
