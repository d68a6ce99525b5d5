"""Peak memory of defending a disputed unit vs executing it (issue #12, attack 2; docs/protocol.md 7).

    .venv/bin/python bench/bench_defence_memory.py [--ops 128] [--mib 4] [--no-full]

A chain program (node/runtime/chainprog.py: relu / add of an earlier output / transpose) of `--ops`
ops whose every output is an int8 [16·MiB, 256, 256] tensor of `--mib` MiB. Each measurement runs
in a fresh subprocess and reports the peak RSS (VmHWM) over its baseline (interpreter, torch, the
program, the executor and the unit input: VmRSS right before the work; the peak is reset there
through /proc/self/clear_refs):
  exec    the honest run of one unit and its output root (what the worker did to earn the job);
  stream  the streaming defence: the worker's trace root and commitTrace path (one streaming pass),
          a full tensor descent (every level's children) and the leaf reveal at the middle op, then
          the challenger's own streaming trace and its one-step proofs (Int8Prover) at that element;
  full    the same answers from the old full trace (Executor.trace, every op output kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(mode: str, ops: int, mib: int) -> dict:
    import numpy as np

    from gpumesh.client.core import merkle
    from gpumesh.client.core.game import GameSnapshot, Phase, Side
    from gpumesh.client.core.merkle import inclusion_proof, roots_zero
    from gpumesh.node.dispute.play import TraceCache, executor_traces, int8_prover
    from gpumesh.node.dispute.strategy import AgreedTrace, UnitTrace
    from gpumesh.node.runtime.chainprog import chain_program, chain_units
    from gpumesh.node.runtime.executor import Executor

    rng = np.random.default_rng(12)
    bundle = chain_program(rng, ops, 16 * mib, 256, linear=False)
    units = chain_units(rng, bundle, 1)
    ex = Executor(bundle)
    prover = int8_prover(bundle, units)
    base = _status("VmRSS")
    exact = _reset_peak()
    t0 = time.perf_counter()
    j = ops // 2
    out: dict = {}
    if mode == "exec":
        y = ex.run_unit(units[0])
        out["root"] = merkle.tensor_roots(np.ascontiguousarray(y)[None])[0].hex()
    else:
        if mode == "stream":
            worker, challenger = (executor_traces(ex, units, TraceCache())(0) for _ in range(2))
        else:
            worker = UnitTrace(ex.trace(units[0]).outputs)
            challenger = worker
        path = inclusion_proof(worker.trace_levels, ops - 1, roots_zero)  # commitTrace
        levels = worker.tensor_levels(j)  # every node a tensor descent can ask for (children)
        kids = [n for lv in levels for n in lv]
        leaf = worker.leaf(j, len(levels[0]) // 2)  # revealLeaf
        d = bundle.program.ops[j].desc
        snap = GameSnapshot(game_id=1, phase=Phase.ONE_STEP, turn=Side.CHALLENGER, move_no=30, height=0, index=0,
                            count=1, node=b"", split_bits=4, op_index=j, num_units=1, num_ops=ops,
                            num_weights=len(bundle.program.weights), trace_root=challenger.trace_root,
                            inputs_root=prover.job.inputs_root)
        agreed = AgreedTrace(challenger, lambda k: inclusion_proof(challenger.trace_levels, k, roots_zero))
        blob = prover.proofs(snap, d.encode(), 0, agreed)  # the challenger's one-step
        out.update(trace_root=worker.trace_root.hex(), path=len(path), nodes=len(kids), leaf=leaf[:16].hex(),
                   proofs=len(blob), op=d.opcode.name)
    out.update(mode=mode, seconds=round(time.perf_counter() - t0, 2), base=base, peak=_status("VmHWM"),
               exact_peak=exact)
    return out


def run_child(mode: str, ops: int, mib: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--ops", str(ops), "--mib", str(mib)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode}: failed\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=128)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--no-full", action="store_true", help="skip the old full-trace path (its memory grows with ops)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.ops, a.mib)))
        return
    modes = ["exec", "stream"] + ([] if a.no_full else ["full"])
    res = {m: run_child(m, a.ops, a.mib) for m in modes}
    mib = 1 << 20
    print(f"{a.ops} ops, {a.mib} MiB per op output (int8 [{16 * a.mib}, 256, 256]); peak RSS per fresh process")
    print(f"{'mode':8} {'base MiB':>9} {'peak MiB':>9} {'+MiB':>7} {'s':>6}")
    for m, r in res.items():
        print(f"{m:8} {r['base'] / mib:9.0f} {r['peak'] / mib:9.0f} {(r['peak'] - r['base']) / mib:7.0f} "
              f"{r['seconds']:6.1f}")
    e, s = res["exec"], res["stream"]
    print(f"defence/execution, peak RSS: {s['peak'] / e['peak']:.2f}x; over the baseline: "
          f"{(s['peak'] - s['base']) / max(1, e['peak'] - e['base']):.2f}x (goal <= 1.2x)")
    if "full" in res:
        f = res["full"]
        assert f["trace_root"] == s["trace_root"] and f["leaf"] == s["leaf"] and f["proofs"] == s["proofs"]
        print(f"before (full trace): peak {f['peak'] / mib:.0f} MiB, +{(f['peak'] - f['base']) / mib:.0f} MiB "
              f"= {(f['peak'] - f['base']) / max(1, e['peak'] - e['base']):.1f}x the execution's; same answers")
    if not all(r["exact_peak"] for r in res.values()):
        print("note: /proc/self/clear_refs not writable: peaks include the setup")


if __name__ == "__main__":
    main()
