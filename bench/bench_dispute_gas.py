"""Dispute-game gas on anvil for the issue's reference unit: 1,024 units, a program of 1,024 ops,
op outputs of 65,536 leaves (64 MiB), played to the end by the Python strategies (real receipts:
21k base + calldata included).

Two parts, in one run:
1. k sweep (k = 1..6) with the ToyStepper as the verifier: rounds per side, the largest reveal and
   pick, the total, each k's total as a ratio of k = 1. This is what k was chosen on.
2. One whole game at k = 4 with the REAL Int8Verifier (`--k` to change it): the disputed op is a
   real linear, K = 1,024, per-channel requant, x = [65,536, 1,024] int8 (the previous op's 64 MiB
   output, trace slot 1,022), W = [1,024, 1,024], out = [65,536, 1,024] int8 = 65,536 leaves, at
   op 1,023 of unit 513; the worker corrupts element (40,000, 123). Prints every move kind's max,
   rounds per side, the total, and the total as a ratio of the toy game at the same k.

Construction (what is real and why it measures the same thing): the game only ever opens the
disputed op's descriptor, the nodes on the dissection paths, one output leaf and the element's
input ranges. So the disputed descriptor, x, W, bias, qp and the disputed element (computed by the
scalar reference) are real; the other 1,023 descriptors, the other trace slots, the other unit
roots and the output's other elements are fixed random bytes, identical for both players (the
game never decodes or recomputes them). Gas depends on tree depths, on the path positions and on
the bytes sent, not on what the unopened bytes are: the revealed hashes are 32 random-looking
bytes either way and the revealed leaf is 1 KiB of random int8 (a real output's leaf has a few
more zero bytes, so this is the costlier case for calldata).

    .venv/bin/python bench/bench_dispute_gas.py [--k 4] [--no-sweep]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "dispute"))

from toy import ToyJob, ToyProver, desc  # noqa: E402

from gpumesh.client.chain.anvil import start_anvil  # noqa: E402
from gpumesh.client.core.constants import LEAF_BYTES  # noqa: E402
from gpumesh.client.core.game import Outcome, Phase  # noqa: E402
from gpumesh.client.core.merkle import program_root, roots_levels, tensor_levels  # noqa: E402
from gpumesh.client.core.ops.reference import compute_element, element_ranges  # noqa: E402
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, SlotKind, SlotRef, TensorType  # noqa: E402
from gpumesh.node.dispute.int8_prover import Int8Prover, JobInputs  # noqa: E402
from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace, challenger_move, worker_move  # noqa: E402
from gpumesh.node.runtime.randprog import _case  # noqa: E402
from tests.integration.dispute.harness import Chain, build_artifacts  # noqa: E402

UNITS, OPS, OUT = 1024, 1024, 65536 * 1024
UNIT = 513
M, K, N = 65536, 1024, 1024
ROW, COL = 40_000, 123
WORKER_MOVES = ("Reveal", "CommitTrace", "RevealLeaf")
MOVE_GOAL, TOTAL_GOAL = 100_000, 3_000_000


def h(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


class SparseTrace(UnitTrace):
    """A unit trace where only some slots carry bytes (`tensors`: slot -> bytes); every other slot
    is a fixed random root (never opened by the game)."""

    def __init__(self, tensors: dict[int, bytes], tag: str) -> None:  # noqa: D107 - no super: sparse
        self.tensors = tensors
        self.tag = tag
        self._levels: dict[int, list[list[bytes]]] = {}

    def tensor_levels(self, op: int) -> list[list[bytes]]:
        if op not in self._levels:
            self._levels[op] = tensor_levels(self.tensors[op])
        return self._levels[op]

    @cached_property
    def roots(self) -> list[bytes]:
        return [self.tensor_levels(t)[-1][0] if t in self.tensors else h(f"{self.tag}/{t}") for t in range(OPS)]

    @cached_property
    def trace_levels(self) -> list[list[bytes]]:
        return roots_levels(self.roots)


def players(prog: Program, unit: int, good: UnitTrace, bad: UnitTrace) -> tuple[PlayerData, PlayerData]:
    """(honest challenger, corrupt worker): the same unit roots but `unit`'s (its trace output)."""

    def player(tr: UnitTrace) -> PlayerData:
        roots = tuple(tr.roots[-1] if u == unit else h(f"unit/{u}") for u in range(UNITS))
        return PlayerData(prog, roots, lambda u: tr)

    return player(good), player(bad)


def play(chain: Chain, worker: PlayerData, honest: PlayerData, prover, inputs_root: bytes) -> tuple[int, list]:
    """Post the job, open a game, play it out; (challenge gas, [(move kind, gas)])."""
    chain.post_job(1, worker.result_levels[-1][0], program_root(1, OPS, worker.program.num_weights,
                                                               worker.program.ops_root), inputs_root, UNITS, 10**18)
    rc = chain.w3.eth.wait_for_transaction_receipt(
        chain.game.functions.challenge(1).transact({"from": chain.challenger, "value": 10**18}))
    gid = chain.game.functions.gameCount().call()
    while (snap := chain.snapshot(gid)).phase != Phase.RESOLVED:
        if snap.turn == 0:
            chain.send(worker_move(snap, worker), chain.worker)
        else:
            chain.send(challenger_move(snap, honest, prover), chain.challenger)
    assert Outcome(chain.game.functions.getGame(gid).call()[5]) == Outcome.CHALLENGER_WON
    return rc.gasUsed, list(chain.gas)


# ---------------------------------------------------------------- part 1: toy k sweep


def toy_game():
    inp = bytes(range(256)) * 4
    descs = (desc(OUT, len(inp), 9),) + tuple(h(f"desc/{t}")[:9] for t in range(1, OPS))
    prog = Program(num_weights=0, descriptors=descs)
    good = bytes((x + 9) & 0xFF for x in inp) * (OUT // len(inp))
    bad = bytearray(good)
    bad[40_000_123] ^= 1
    job = ToyJob([inp] + [h(f"in/{u}")[:16] for u in range(1, UNITS)], list(descs))
    # different filler tags: every slot after op 0 differs too (as after a real corrupt op 0)
    honest, worker = players(prog, 0, SparseTrace({0: good}, "h"), SparseTrace({0: bytes(bad)}, "w"))
    return worker, honest, ToyProver(job), job.inputs_root


# ---------------------------------------------------------------- part 2: the real verifier


def real_game():
    """The linear K=1024 dispute at op 1,023 of unit 513 (see the module docstring)."""
    rng = np.random.default_rng(6)
    I8, I32 = DType.INT8, DType.INT32
    xt, wt, bt, qt = TensorType(I8, (M, K)), TensorType(I8, (N, K)), TensorType(I32, (N,)), TensorType(I32, (N, 2))
    x = rng.integers(-128, 128, (M, K), dtype=np.int8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    b = rng.integers(-(2**24), 2**24, N).astype(np.int32)
    qp = np.stack([rng.integers(2**29, 2**31 - 1, N), rng.integers(30, 40, N)], axis=1).astype(np.int32)
    case = _case(Opcode.LINEAR, [xt, wt, bt, qt], [x, w, b, qp], x_zp=-5,
                 requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 3, -128, 127))
    ins = list(case.desc.inputs)
    ins[0] = SlotRef(SlotKind.OP_OUTPUT, OPS - 2, xt)  # x: the previous op's output, an agreed slot
    d = dataclasses.replace(case.desc, inputs=tuple(ins))
    assert d.out == TensorType(I8, (M, N)) and d.out.nbytes == OUT
    data = [a.tobytes() for a in (x, w, b, qp)]
    e = ROW * N + COL
    value = compute_element(d, e, [data[r.input][r.start : r.end] for r in element_ranges(d, e)])
    out = bytearray(rng.integers(-128, 128, OUT, dtype=np.int8).tobytes())  # unopened elements
    out[e] = value & 0xFF
    good = bytes(out)
    out[e] = (value + 1) & 0xFF if value < 127 else 0
    xb = data[0]
    descs = tuple(h(f"desc/{t}")[:9] for t in range(OPS - 1)) + (d.encode(),)
    prog = Program(num_weights=3, descriptors=descs)
    job = JobInputs(data[1:], [h(f"in/{u}")[:16] for u in range(UNITS)])
    honest, worker = players(prog, UNIT, SparseTrace({OPS - 2: xb, OPS - 1: good}, "r"),
                             SparseTrace({OPS - 2: xb, OPS - 1: bytes(out)}, "r"))
    return worker, honest, Int8Prover(job), job.inputs_root


# ---------------------------------------------------------------- report


def summary(open_gas: int, gas: list) -> dict:
    by_kind: dict[str, int] = {}
    for n, g in gas:
        by_kind[n] = max(by_kind.get(n, 0), g)
    w = sum(1 for n, _ in gas if n in WORKER_MOVES)
    return {"moves": len(gas), "worker": w, "challenger": len(gas) - w, "max": by_kind,
            "total": open_gas + sum(g for _, g in gas), "open": open_gas}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4, help="split bits of the real-verifier game")
    ap.add_argument("--no-sweep", action="store_true", help="skip the toy k = 1..6 sweep")
    args = ap.parse_args()
    sweep = [] if args.no_sweep else list(range(1, 7))
    ks = sorted(set(sweep) | {args.k})
    print(f"unit: {UNITS} units, {OPS} ops, {OUT // LEAF_BYTES} leaves per output tensor (depths 10/10/16)")
    toy = toy_game()
    real = real_game()
    with start_anvil() as anvil, tempfile.TemporaryDirectory() as out:
        arts = build_artifacts(Path(out), ["contracts/src/dispute/DisputeGame.sol",
                                           "contracts/test/dispute/mocks/MockMarket.sol",
                                           "contracts/test/dispute/mocks/ToyStepper.sol",
                                           "contracts/src/dispute/Int8Verifier.sol"])
        toys = {k: summary(*play(Chain(anvil, arts, k), *toy)) for k in ks}
        r = summary(*play(Chain(anvil, arts, args.k, stepper="Int8Verifier"), *real))
    if sweep:
        base = toys[1]["total"]
        print("ToyStepper one-step (the k choice):")
        print(" k | moves | worker rounds | challenger rounds | max reveal | max pick | total gas | vs k=1")
        for k in sweep:
            s = toys[k]
            print(f"{k:2d} | {s['moves']:5d} | {s['worker']:13d} | {s['challenger']:17d} | {s['max']['Reveal']:10,} |"
                  f" {s['max']['Pick']:8,} | {s['total']:9,} | {s['total'] / base:.2f}"
                  f"   (open {s['open']:,}; {', '.join(f'{n} {g:,}' for n, g in s['max'].items())})")
    t = toys[args.k]
    print(f"\nREAL Int8Verifier, k = {args.k}: linear K={K} per-channel at op {OPS - 1} of unit {UNIT},"
          f" element ({ROW}, {COL}); worker corrupt, honest challenger")
    print(f"moves {r['moves']} (worker {r['worker']}, challenger {r['challenger']}); open (challenge) {r['open']:,} gas")
    for n, g in r["max"].items():
        flag = "" if n == "Step" or g <= MOVE_GOAL else "  ABOVE the 100k goal"
        print(f"  max {n:12} {g:>9,}{flag}")
    dissect = max(g for n, g in r["max"].items() if n != "Step")
    print(f"largest move other than the one-step: {dissect:,} gas = {dissect / MOVE_GOAL:.2f} of the 100k goal")
    print(f"total (open + all moves) {r['total']:,} gas = {r['total'] / TOTAL_GOAL:.2f} of the 3M goal;"
          f" vs the toy game at k = {args.k}: {r['total'] / t['total']:.2f} ({t['total']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
