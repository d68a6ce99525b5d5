"""Dispute-game gas on anvil for the issue's reference unit: 1,024 units, a program of 1,024 ops,
op outputs of 65,536 leaves (64 MiB), played to the one-step by the Python strategies (ToyStepper
as the verifier), for k = 1..6. Prints gas per move (real receipts: 21k base + calldata included),
rounds per side, the total, and each k's total as a ratio of k = 1 measured in the same run.

Only the disputed op's output is real data; the other trace slots and unit roots are random
hashes (the game never looks inside them). Run: .venv/bin/python bench/bench_dispute_gas.py
"""

from __future__ import annotations

import hashlib
import sys
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "dispute"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "dispute"))

from conftest import Chain  # noqa: E402
from toy import ToyJob, ToyProver, desc  # noqa: E402

from gpumesh.client.chain.anvil import start_anvil  # noqa: E402
from gpumesh.client.core.game import Outcome, Phase  # noqa: E402
from gpumesh.client.core.merkle import program_root, roots_levels  # noqa: E402
from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace, challenger_move, worker_move  # noqa: E402

UNITS, OPS, OUT = 1024, 1024, 65536 * 1024


def h(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


class SparseTrace(UnitTrace):
    """Op 0 real; every other slot a fixed random root (never opened by the game)."""

    def __init__(self, op0: bytes, tag: str) -> None:
        super().__init__([op0])
        self.tag = tag

    @cached_property
    def roots(self) -> list[bytes]:
        return [self.tensor_levels(0)[-1][0]] + [h(f"{self.tag}/{t}") for t in range(1, OPS)]

    @cached_property
    def trace_levels(self) -> list[list[bytes]]:
        return roots_levels(self.roots)


def main() -> int:
    inp = bytes(range(256)) * 4
    d0 = desc(OUT, len(inp), 9)
    descs = (d0,) + tuple(h(f"desc/{t}")[:9] for t in range(1, OPS))
    prog = Program(num_weights=0, descriptors=descs)
    good = bytes((x + 9) & 0xFF for x in inp) * (OUT // len(inp))
    bad = bytearray(good)
    bad[40_000_123] ^= 1
    traces = {"honest": SparseTrace(good, "h"), "worker": SparseTrace(bytes(bad), "w")}
    job = ToyJob([inp] + [h(f"in/{u}")[:16] for u in range(1, UNITS)], list(descs))

    def player(name: str) -> PlayerData:
        tr = traces[name]
        roots = (tr.roots[-1],) + tuple(h(f"unit/{u}") for u in range(1, UNITS))
        return PlayerData(prog, roots, lambda u: tr)

    honest, worker = player("honest"), player("worker")
    results = {}
    with start_anvil() as anvil:
        import json
        import os
        import subprocess
        import tempfile

        out = Path(tempfile.mkdtemp())
        env = dict(os.environ, FOUNDRY_OUT=str(out), FOUNDRY_CACHE_PATH=str(out / "cache"))
        subprocess.run([str(ROOT / "node_modules/.bin/forge"), "build", "--quiet",  # noqa: S603
                        "contracts/src/dispute/DisputeGame.sol", "contracts/test/dispute/mocks/MockMarket.sol",
                        "contracts/test/dispute/mocks/ToyStepper.sol"], cwd=ROOT, env=env, check=True)
        arts = {}
        for n in ("DisputeGame", "MockMarket", "ToyStepper"):
            doc = json.loads((out / f"{n}.sol" / f"{n}.json").read_text())
            arts[n] = (doc["abi"], doc["bytecode"]["object"])
        for k in range(1, 7):
            chain = Chain(anvil, arts, k)
            chain.post_job(1, worker.result_levels[-1][0], program_root(1, OPS, 0, prog.ops_root),
                           job.inputs_root, UNITS, 10**18)
            rc = chain.w3.eth.wait_for_transaction_receipt(
                chain.game.functions.challenge(1).transact({"from": chain.challenger, "value": 10**18}))
            gid = chain.game.functions.gameCount().call()
            while (snap := chain.snapshot(gid)).phase != Phase.RESOLVED:
                if snap.turn == 0:
                    chain.send(worker_move(snap, worker), chain.worker)
                else:
                    chain.send(challenger_move(snap, honest, ToyProver(job)), chain.challenger)
            assert Outcome(chain.game.functions.getGame(gid).call()[5]) == Outcome.CHALLENGER_WON
            results[k] = (rc.gasUsed, list(chain.gas))
    base = None
    print(f"unit: {UNITS} units, {OPS} ops, {OUT // 1024} leaves per output tensor (depths 10/10/16)")
    print(" k | moves | worker rounds | challenger rounds | max reveal | max pick | step (toy) | total gas | vs k=1")
    for k, (open_gas, gas) in results.items():
        reveals = [g for n, g in gas if n == "Reveal"]
        picks = [g for n, g in gas if n == "Pick"]
        step = next(g for n, g in gas if n == "Step")
        w_moves = sum(1 for n, _ in gas if n in ("Reveal", "CommitTrace", "RevealLeaf"))
        c_moves = len(gas) - w_moves
        total = open_gas + sum(g for _, g in gas)
        base = base or total
        others = {n: g for n, g in gas if n in ("CommitTrace", "ProveOp", "RevealLeaf")}
        print(f"{k:2d} | {len(gas):5d} | {w_moves:13d} | {c_moves:17d} | {max(reveals):10d} | {max(picks):8d} |"
              f" {step:10d} | {total:9d} | {total / base:.2f}   (open {open_gas}, {others})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
