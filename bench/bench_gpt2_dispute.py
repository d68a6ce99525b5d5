"""A GPT-2-small-shaped job (examples/gpt2_shape: d 768, 12 layers, 12 heads, context 1,024,
vocabulary 50,257, seeded random int8 weights) run on this CPU and DISPUTED end to end on anvil
with the real DisputeGame + Int8Verifier (issue #14, scale).

    .venv/bin/python bench/bench_gpt2_dispute.py [--layers N] [--preset small|tiny] [--no-ipfs]

1. Build the program and weights in memory (seeded), one unit (1 sequence of `ctx` random tokens).
2. Worker execution: the honest run of the unit through the Executor (time, tokens/s), its peak RSS
   (VmHWM, reset through /proc/self/clear_refs right before; the baseline is the process with the
   weights and the prepared executor).
3. Posting: the program folder and the inputs uploaded to an embedded IPFS node (time, CIDs), the
   job set on anvil (MockMarket + DisputeGame + Int8Verifier, the game harness of
   tests/integration/dispute/harness.py) with the program root and the inputs root.
4. Three games, each played to its one-step by the Python strategies (worker_move,
   challenger_move with Int8Prover), the challenger's trace a streaming one (Executor.trace_roots /
   op_outputs through a TraceCache, the watchtower's path): the worker corrupts ONE element of
   (a) the attention softmax of the last block (head 5, last query, key 100: its causal row is
       the whole context), (b) the LM head's top-k chunk level (chunks of 8,192 logits; element 5 is the index
       carried by chunk 2's best), (c) the final top-k over the chunk candidates (the next token).
   Its trace is the honest one up to that op and the rest recomputed from the corrupted output with
   the reference kernels (tests/integration/nodes/conftest.cheat_trace's rule), and where the error
   vanishes before the output it also lies about the output (the first wrong op stays the target).
   Prints every move's gas, moves per side, the total, the one-step gas, and the process's peak
   RSS over the games (both sides play in this process, so it bounds one side's).

Both players share one TraceCache here (one process); a worker daemon and a watchtower each keep
their own, so each would re-run the unit once more than this run does."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_defence_memory import _reset_peak, _status  # noqa: E402 - VmRSS / VmHWM, peak reset
from examples.gpt2_shape import build as gpt2  # noqa: E402
from gpumesh.client.core import merkle  # noqa: E402
from gpumesh.client.core.game import SPLIT_BITS, Outcome, Reason, total_moves  # noqa: E402
from gpumesh.client.core.ops.types import SlotKind  # noqa: E402
from gpumesh.node.dispute.play import TraceCache, executor_traces, int8_prover, player_data  # noqa: E402
from gpumesh.node.dispute.strategy import TraceView  # noqa: E402
from gpumesh.node.runtime.files import NP_DTYPE, ProgramBundle  # noqa: E402

BOND = 10**18
WORKER_MOVES = {"Reveal", "CommitTrace", "RevealLeaf", "AnswerData"}  # node/dispute/strategy.worker_move
TOTAL_GOAL = 3_000_000


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


class SplicedTrace(TraceView):
    """A cheating worker's trace of one unit: the honest trace's ops before `first`, then `tail`
    (the outputs of ops first.. recomputed from the corrupted one)."""

    def __init__(self, honest: TraceView, first: int, tail: list[bytes]) -> None:
        self.honest, self.first, self.tail = honest, first, tail
        self._levels: dict[int, list[list[bytes]]] = {}
        self.roots = list(honest.roots[:first]) + [merkle.tensor_root(t) for t in tail]

    def tensor(self, op: int) -> bytes:
        return self.tail[op - self.first] if op >= self.first else self.honest.tensor(op)

    def tensor_levels(self, op: int) -> list[list[bytes]]:
        if op < self.first:
            return self.honest.tensor_levels(op)
        if op not in self._levels:
            self._levels[op] = merkle.tensor_levels(self.tensor(op))
        return self._levels[op]

    def prefetch(self, ops) -> None:
        self.honest.prefetch([j for j in ops if j < self.first])


def reads_before(b: ProgramBundle, op: int) -> list[int]:
    """The outputs of ops before `op` that ops op.. read."""
    return sorted({s.index for o in b.program.ops[op:] for s in o.desc.inputs
                   if s.kind == SlotKind.OP_OUTPUT and s.index < op})


def cheat_tail(b: ProgramBundle, unit: np.ndarray, honest: TraceView, op: int, element: int) -> list[bytes]:
    """Outputs of ops op.. of `unit` with `element` of op `op` corrupted (its low byte XOR 0x5A)
    and the error propagated by the reference kernels; if the output came out right anyway, its
    element 0 is corrupted too (a correct result is not disputable)."""
    import torch

    from gpumesh.node.runtime import kernels

    prog = b.program
    descs = [o.desc for o in prog.ops]
    earlier = reads_before(b, op)
    honest.prefetch(earlier)  # one re-run of the unit for all of them (none if cached)

    def tensor(data: bytes, t) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=NP_DTYPE[t.dtype]).reshape(t.shape).copy())

    outs = {i: tensor(honest.tensor(i), descs[i].out) for i in earlier}
    ws = {s.index: torch.from_numpy(np.array(b.weight_arrays[prog.weights[s.index].name], copy=True))
          for d in descs[op:] for s in d.inputs if s.kind == SlotKind.WEIGHT}
    x = tensor(np.ascontiguousarray(unit).tobytes(), prog.input.type)
    tail: list[bytes] = []
    with torch.inference_mode():
        for j in range(op, len(descs)):
            d = descs[j]
            y = kernels.run_op(d, [ws[s.index] if s.kind == SlotKind.WEIGHT else x if s.kind == SlotKind.UNIT_INPUT
                                   else outs[s.index] for s in d.inputs])
            data = bytearray(np.ascontiguousarray(y.numpy()).tobytes())
            if j == op:
                data[element * d.out.dtype.width] ^= 0x5A
                y = tensor(bytes(data), d.out)
            outs[j] = y
            tail.append(bytes(data))
    if merkle.tensor_root(tail[-1]) == honest.roots[-1]:
        last = bytearray(tail[-1])
        last[0] ^= 0x01
        tail[-1] = bytes(last)
    return tail


def play_game(chain, job_id: int, b: ProgramBundle, units: np.ndarray, honest_traces, prover, op: int,
              element: int) -> list[tuple[str, int]]:
    from tests.integration.dispute.harness import play, resolved_reason

    honest = honest_traces(0)
    t0 = time.perf_counter()
    worker_view = SplicedTrace(honest, op, cheat_tail(b, units[0], honest, op, element))
    worker = player_data(b, [worker_view.roots[-1]], lambda u: worker_view)
    challenger = player_data(b, [honest.roots[-1]], honest_traces)
    chain.post_job(job_id, worker.result_levels[-1][0], b.program.root(), prover.job.inputs_root, 1, BOND)
    gid = chain.challenge(job_id, BOND)
    start = len(chain.gas)
    g = play(chain, gid, worker, challenger, prover)
    moves = [m for m in chain.gas[start:] if m[0] != "ResolveTimeout"]
    assert Outcome(g[5]) == Outcome.CHALLENGER_WON, "the challenger must win"
    assert resolved_reason(chain, gid) == Reason.ONE_STEP
    assert (g[14], g[15]) == (0, op), f"the game ended at {(g[14], g[15])}, not at op {op}"
    assert chain.market.functions.isSlashed(job_id).call()
    d = b.program.ops[op].desc
    assert len(moves) == total_moves(1, len(b.program.ops), d.out.nbytes, SPLIT_BITS)
    gas = [gv for _, gv in moves]
    wk = sum(name in WORKER_MOVES for name, _ in moves)
    name = b.program.ops[op].name
    print(f"\n[{name}] op {op} ({d.opcode.name.lower()} -> {d.out.dtype.name.lower()}{list(d.out.shape)}), "
          f"element {element}: {time.perf_counter() - t0:.0f} s")
    print("  moves: " + ", ".join(f"{n} {gv:,}" for n, gv in moves))
    print(f"  moves {len(moves)} (worker {wk}, challenger {len(moves) - wk}); one-step {dict(moves)['Step']:,} gas; "
          f"largest other move {max(gv for n, gv in moves if n != 'Step'):,}; total {sum(gas):,} gas "
          f"(goal <= {TOTAL_GOAL:,}: {'met' if sum(gas) <= TOTAL_GOAL else 'NOT met'})")
    return moves


def upload(b: ProgramBundle, units: np.ndarray, tmp: Path) -> None:
    from gpumesh.ipfs.kubo import KuboStore
    from gpumesh.ipfs.node import EmbeddedNode
    from gpumesh.node.runtime.files import save_program, save_units

    t0 = time.perf_counter()
    save_program(tmp / "program", b.program, b.weight_arrays)
    save_units(tmp / "inputs.safetensors", units)
    t1 = time.perf_counter()
    with EmbeddedNode(tmp / "ipfs-repo") as node:
        store = KuboStore(node.api_multiaddr)
        try:
            pcid, icid = store.add_path(tmp / "program"), store.add_path(tmp / "inputs.safetensors")
        finally:
            store.close()
    size = sum(f.stat().st_size for f in (tmp / "program").iterdir())
    print(f"posting: program folder {size:,} bytes written in {t1 - t0:.1f} s, uploaded to an embedded IPFS node "
          f"in {time.perf_counter() - t1:.1f} s (program {pcid}, inputs {icid})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2.add_config_args(ap)
    ap.add_argument("--no-ipfs", action="store_true", help="skip the IPFS upload")
    a = ap.parse_args()
    c = gpt2.config_of(a)
    from gpumesh.client.core.ops.types import Opcode
    from gpumesh.node.runtime.executor import Executor
    from tests.chain_node import start_test_node
    from tests.integration.dispute.harness import Chain, build_artifacts

    t0 = time.perf_counter()
    b = gpt2.bundle(c)
    units = gpt2.units(c, 1)
    nbytes = sum(len(v) for v in b.weight_bytes.values())
    print(f"{c}: {len(b.program.ops)} ops, {len(b.program.weights)} weights, {nbytes:,} weight bytes, "
          f"built in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ex = Executor(b)
    print(f"executor prepared in {time.perf_counter() - t0:.1f} s")

    base = _status("VmRSS")
    exact = _reset_peak()
    t0 = time.perf_counter()
    y = ex.run_unit(units[0])
    dt = time.perf_counter() - t0
    peak = _status("VmHWM")
    trace_bytes = sum(o.desc.out.nbytes for o in b.program.ops)
    print(f"worker execution: 1 unit of {c.ctx} tokens in {dt:.1f} s ({c.ctx / dt:.1f} tokens/s), next token "
          f"{int(y.reshape(-1)[0])}; peak RSS {_mib(peak)} (baseline {_mib(base)}, +{_mib(peak - base)})"
          f"{'' if exact else ' (clear_refs not writable: the peak includes the setup)'}; one unit's full trace "
          f"would be {trace_bytes:,} bytes")

    with tempfile.TemporaryDirectory() as tmp:
        if not a.no_ipfs:
            upload(b, units, Path(tmp))
        t0 = time.perf_counter()
        artifacts = build_artifacts(Path(tmp) / "forge-out", ["contracts/src/dispute/Int8Verifier.sol",
                                                                "contracts/src/dispute/DisputeGame.sol",
                                                                "contracts/test/dispute/mocks/MockMarket.sol"])
        print(f"contracts built in {time.perf_counter() - t0:.0f} s")
        with start_test_node() as anvil:
            chain = Chain(anvil, artifacts, SPLIT_BITS, stepper="Int8Verifier")
            base = _status("VmRSS")
            _reset_peak()
            t0 = time.perf_counter()
            prover = int8_prover(b, units)
            honest = executor_traces(ex, units, TraceCache())  # the daemons' default budget
            roots = honest(0).roots
            print(f"challenger's streaming trace roots ({len(roots)} ops) and inputs root in "
                  f"{time.perf_counter() - t0:.0f} s; honest result {honest(0).roots[-1].hex()[:16]}..")
            ops = {o.name: j for j, o in enumerate(b.program.ops)}
            sm = ops[f"b{c.layers - 1}.p"]
            chunks = next(j for j, o in enumerate(b.program.ops) if o.desc.opcode == Opcode.TOPK)
            # (op, element): a vocabulary that fits one topk (tiny) has no chunk level
            targets = sorted({sm: (min(5, c.heads - 1) * c.ctx + c.ctx - 1) * c.ctx + min(100, c.ctx - 1),
                              chunks: 5 if chunks < len(ops) - 1 else 0, len(ops) - 1: 0}.items())
            t0 = time.perf_counter()  # one re-run keeps what every game's cheat and one-step read
            honest(0).prefetch(sorted({j for op, _ in targets for j in (*reads_before(b, op), op)}))
            print(f"challenger's op outputs for the games recomputed in {time.perf_counter() - t0:.0f} s")
            total = {}
            for job_id, (op, element) in enumerate(targets, start=1):
                total[b.program.ops[op].name] = play_game(chain, job_id, b, units, honest, prover, op, element)
            peak = _status("VmHWM")
    print(f"\npeak RSS from the challenger's trace roots to the end of the games (both sides in this process): {_mib(peak)} (+{_mib(peak - base)} "
          f"over {_mib(base)})")
    for name, moves in total.items():
        print(f"  {name:16s} one-step {dict(moves)['Step']:>9,} gas, total {sum(g for _, g in moves):>10,} gas, "
              f"{len(moves)} moves")


if __name__ == "__main__":
    main()
