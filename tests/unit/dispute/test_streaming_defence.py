"""The streaming defence (docs/protocol.md 7) changes nothing on-chain: on random chain programs,
the worker's answers (trace root and its commitTrace path, the revealed children at every level of
the trace and tensor descents, the revealed leaf) and the challenger's one-step proofs from
streaming traces (roots only, op outputs recomputed on demand into a small cache) are IDENTICAL
to those of the full-trace path (Executor.trace / UnitTrace). Also the TraceCache bounds."""

from __future__ import annotations

import numpy as np
import pytest

from gpumesh.client.core.game import GameSnapshot, Phase, Side
from gpumesh.client.core.merkle import depth_for, inclusion_proof, leaf_count, roots_zero
from gpumesh.client.core.ops.reference import element_ranges
from gpumesh.node.dispute.play import TraceCache, executor_traces, int8_prover, player_data
from gpumesh.node.dispute.strategy import AgreedTrace, UnitTrace, worker_move
from gpumesh.node.runtime.chainprog import chain_program, chain_units
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.worker.faults import Fault, FaultyExecutor, op_outputs_at, trace_at, trace_roots_at


def _snap(phase: Phase, turn: Side, **kw) -> GameSnapshot:
    base = dict(game_id=1, phase=phase, turn=turn, move_no=5, height=0, index=0, count=1, node=b"", split_bits=2)
    return GameSnapshot(**{**base, **kw})


def _descent(rng, phase: Phase, count: int, **kw):
    """Snapshots of one random path of a descent over `count` leaves, top to bottom."""
    h, idx = depth_for(count), 0
    while h > 0:
        s = _snap(phase, Side.WORKER, height=h, index=idx, count=count, **kw)
        yield s
        idx = (idx << s.m) | int(rng.integers(0, 1 << s.m))
        h -= s.m


@pytest.mark.parametrize("seed", range(6))
def test_streaming_answers_equal_the_full_trace(seed):
    rng = np.random.default_rng(seed)
    bundle = chain_program(rng, int(rng.integers(1, 14)), int(rng.integers(1, 4)), int(rng.integers(2, 40)))
    units = chain_units(rng, bundle, 3)
    ex = Executor(bundle)
    u = int(rng.integers(0, 3))
    full = UnitTrace(ex.trace(units[u]).outputs)
    cache = TraceCache(int(rng.choice([0, 3000, 1 << 20])))  # nothing, a few tensors, everything
    calls: list[list[int]] = []
    traces = executor_traces(ex, units, cache, scope=7)
    outputs = traces._outputs
    traces._outputs = lambda v, ops: calls.append(list(ops)) or outputs(v, ops)
    stream = traces(u)
    assert stream.roots == full.roots and stream.trace_levels == full.trace_levels
    unit_roots = tuple(UnitTrace(ex.trace(x).outputs).roots[-1] for x in units)
    progs = [player_data(bundle, unit_roots, lambda _, t=t: t) for t in (full, stream)]
    num_ops = len(bundle.program.ops)

    def answers(snap):
        a, b = (worker_move(snap, p) for p in progs)
        assert a == b and a is not None
        return a

    answers(_snap(Phase.TRACE_COMMIT, Side.WORKER, unit_index=u, num_ops=num_ops))
    for s in _descent(rng, Phase.TRACE_DESCENT, num_ops, unit_index=u, num_ops=num_ops):
        answers(s)
    for j in range(num_ops):
        n = leaf_count(bundle.program.ops[j].desc.out.nbytes)
        assert stream.tensor_levels(j) == full.tensor_levels(j)
        for s in _descent(rng, Phase.TENSOR_DESCENT, n, unit_index=u, op_index=j):
            answers(s)
        for i in range(n):
            answers(_snap(Phase.LEAF_REVEAL, Side.WORKER, unit_index=u, op_index=j, index=i))
    # the challenger's one-step proofs at every op, for its first and last element
    prover = int8_prover(bundle, units)
    for j in range(num_ops):
        d = bundle.program.ops[j].desc
        snap = _snap(Phase.ONE_STEP, Side.CHALLENGER, unit_index=u, op_index=j, num_units=3, num_ops=num_ops,
                     num_weights=len(bundle.program.weights), trace_root=full.trace_root,
                     inputs_root=prover.job.inputs_root)
        for e in (0, d.out.count - 1):
            blobs = [prover.proofs(snap, d.encode(), e, AgreedTrace(
                t, lambda k, t=t: inclusion_proof(t.trace_levels, k, roots_zero))) for t in (full, stream)]
            assert blobs[0] == blobs[1]
            assert len(element_ranges(d, e)) >= 1
    assert cache.nbytes <= cache.max_bytes
    assert all(len(c) >= 1 for c in calls)
    traces.close()
    assert len(cache) == 0


def test_a_faulty_workers_streaming_trace_is_its_full_trace():
    rng = np.random.default_rng(11)
    bundle = chain_program(rng, 9, 2, 24)
    units = chain_units(rng, bundle, 2)
    ex = FaultyExecutor(bundle, Fault(1, 4, 17))
    full = trace_at(ex, 1, units[1])
    assert trace_roots_at(ex, 1, units[1]) == list(full.roots)
    assert op_outputs_at(ex, 1, units[1], [4, 6]) == {4: full.outputs[4], 6: full.outputs[6]}
    assert trace_roots_at(ex, 0, units[0]) == list(Executor(bundle).trace(units[0]).roots)


def test_recomputing_runs_only_up_to_the_last_wanted_op():
    rng = np.random.default_rng(2)
    bundle = chain_program(rng, 12, 2, 8, linear=False)
    ex = Executor(bundle)
    ran: list[int] = []
    plan = ex._plan
    ex._plan = [(lambda xs, fn=fn, j=j: ran.append(j) or fn(xs), srcs) for j, (fn, srcs) in enumerate(plan)]
    x = chain_units(rng, bundle, 1)[0]
    assert set(ex.op_outputs(x, [3, 5])) == {3, 5}
    assert ran == list(range(6))
    with pytest.raises(IndexError):
        ex.op_outputs(x, [12])
    assert ex.op_outputs(x, []) == {}


def test_trace_cache_is_an_lru_by_bytes_with_per_scope_eviction():
    c = TraceCache(100)
    c.put((1, 0, 0, "out"), b"a", 40)
    c.put((2, 0, 0, "out"), b"b", 40)
    assert c.get((1, 0, 0, "out")) == b"a"  # now most recent
    c.put((1, 0, 1, "out"), b"c", 40)  # over budget: the least recent (job 2's) goes
    assert c.get((2, 0, 0, "out")) is None and c.nbytes == 80
    c.put((3, 0, 0, "out"), b"big", 101)  # bigger than the whole budget: not kept, nothing evicted
    assert c.get((3, 0, 0, "out")) is None and len(c) == 2
    c.put((1, 0, 1, "out"), b"d", 10)  # replacing an entry re-counts it
    assert c.nbytes == 50
    c.drop(1)
    assert len(c) == 0 and c.nbytes == 0
    with pytest.raises(ValueError):
        TraceCache(-1)
