"""The GPT-2-small-shaped job (examples/gpt2_shape) through the real market and the real
watchtower (issue #14, scale): the deployment of contracts/script/Deploy.s.sol on anvil
(JobMarket, WorkerRegistry, DisputeGame, Int8Verifier), an embedded IPFS node, a posted job, a
worker that corrupts ONE element of the last block's attention softmax and submits, and the
watchtower daemon (gpumesh.node.watchtower: downloads the job from IPFS, re-executes the unit,
challenges, plays with its streaming traces) against the worker's Responder, until the game is
resolved and collected.

    .venv/bin/python bench/bench_gpt2_market.py [--layers N] [--preset small|tiny]

Prints the worker's execution (time, tokens/s, peak RSS over the loaded program), every
game transaction's gas read back from the chain (challenge, moves, step, collection), the moves
per side, the one-step gas and the total, the game's (unit, op) and outcome, and the wall time of
the watchtower's part. The worker is played by hand as tests/integration/nodes/conftest.py's
submit_as_worker does (stake, claim, run, publish, submit; its corrupted trace as in
bench_gpt2_dispute.cheat_tail: a worker daemon never cheats), in this process with the tower."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_defence_memory import _reset_peak, _status  # noqa: E402
from bench.bench_gpt2_dispute import WORKER_MOVES, SplicedTrace, _mib, cheat_tail  # noqa: E402
from examples.gpt2_shape import build as gpt2  # noqa: E402

ETH = 10**18


def game_txs(w3, game, start: int) -> list[tuple[str, int, str]]:
    """(function, gas used, sender) of every transaction to the game contract since block `start`."""
    out = []
    for n in range(start, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["to"] == game.address:
                fn, _ = game.decode_function_input(tx["input"])
                out.append((fn.fn_name, w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"], tx["from"]))
    return out


def main() -> None:  # noqa: PLR0915 - one linear story
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2.add_config_args(ap)
    a = ap.parse_args()
    c = gpt2.config_of(a)
    logging.basicConfig(level=logging.WARNING)

    from gpumesh.client.chain.deploy import deploy
    from gpumesh.client.chain.types import JobSpec
    from gpumesh.client.core import merkle
    from gpumesh.client.core.game import Outcome, Side
    from gpumesh.client.core.jobspec import JobSpecDoc
    from gpumesh.client.core.program import inputs_root, result_root
    from gpumesh.client.services.accounts import dev_account
    from gpumesh.ipfs.node import EmbeddedNode
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.dispute.play import TraceCache, executor_traces, player_data
    from gpumesh.node.dispute.responder import Responder
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import from_bytes, save_outputs, save_program, save_units
    from tests.chain_node import start_test_node
    from tests.integration.nodes.conftest import NodeDevnet
    from tests.integration.watchtower.helpers import make_tower

    b = gpt2.bundle(c)
    units = gpt2.units(c, 1)
    print(f"{c}: {len(b.program.ops)} ops, {sum(len(v) for v in b.weight_bytes.values()):,} weight bytes")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        folder, inputs_file = tmp / "program", tmp / "inputs.safetensors"
        save_program(folder, b.program, b.weight_arrays)
        save_units(inputs_file, units)
        t0 = time.perf_counter()
        anvil = start_test_node()
        try:
            dep = deploy(anvil.url, dev_account(0).key.hex(), unbonding_delay=3600)
            ipfs = EmbeddedNode(tmp / "ipfs-repo")
            ipfs.start()
            dn = NodeDevnet(anvil, dep, tmp / "deployment.json", ipfs, tmp)
            print(f"deployment + IPFS node in {time.perf_counter() - t0:.0f} s")

            # poster: upload, spec, post (roots from the files, as post_digits_job)
            t0 = time.perf_counter()
            store = dn.store()
            program_cid, inputs_cid = store.add_path(folder), store.add_path(inputs_file)
            proot = b.program.root()
            iroot = inputs_root(b.program, b.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in units])
            spec_cid = store.add_bytes(JobSpecDoc(program_cid, inputs_cid, proot, iroot, 1,
                                                  meta={"model": "gpt2-shape"}).to_bytes())
            stake, bond = 2 * ETH, ETH // 2
            spec = JobSpec(spec_cid=spec_cid, program_root=proot, inputs_root=iroot, num_units=1,
                           required_stake=stake, claim_deadline=dn.now() + 3600, execution_time=3600,
                           challenge_window=3600, min_gpu_memory_mib=0, dispute_bond=bond)
            job_id, _ = dn.market("poster").post_job(spec, ETH)
            print(f"posted job {job_id} (program {program_cid}) in {time.perf_counter() - t0:.1f} s")

            # the worker: stake, claim, execute, corrupt, publish, submit
            dn.registry("worker").stake(stake)
            dn.market("worker").claim_job(job_id)
            ex = Executor(b)
            base = _status("VmRSS")
            _reset_peak()
            t0 = time.perf_counter()
            honest_out = ex.run_unit(units[0])
            dt = time.perf_counter() - t0
            print(f"worker execution: {c.ctx} tokens in {dt:.1f} s ({c.ctx / dt:.1f} tokens/s), peak RSS "
                  f"{_mib(_status('VmHWM'))} (+{_mib(_status('VmHWM') - base)} over the loaded program)")
            op = next(j for j, o in enumerate(b.program.ops) if o.name == f"b{c.layers - 1}.p")
            element = (min(5, c.heads - 1) * c.ctx + c.ctx - 1) * c.ctx + min(100, c.ctx - 1)
            honest = executor_traces(ex, units, TraceCache())(0)
            view = SplicedTrace(honest, op, cheat_tail(b, units[0], honest, op, element))
            out = from_bytes(view.tail[-1], b.program.output_type)
            print(f"worker lies: op {op} element {element}; next token {int(out.reshape(-1)[0])} "
                  f"(honest {int(honest_out.reshape(-1)[0])})")
            rr = result_root([view.roots[-1]])
            save_outputs(tmp / "outputs.safetensors", out[None])
            dn.market("worker").submit_result(job_id, rr, store.add_path(tmp / "outputs.safetensors"))
            data = player_data(b, [view.roots[-1]], lambda u: view)
            worker_game = dn.game("worker")
            responder = Responder(worker_game, StateStore(tmp / "worker.sqlite"))

            def defend() -> None:
                for gid in worker_game.games_of_job(job_id):
                    responder.play(gid, Side.WORKER, data)

            start = dn.w3().eth.block_number + 1
            tower = make_tower(dn, tmp / "wt.sqlite")
            t0 = time.perf_counter()
            ticks = tower.run_until_idle(400, defend)
            wall = time.perf_counter() - t0
            (gid,) = dn.game().games_of_job(job_id)
            g = dn.game().get_game(gid)
            txs = game_txs(dn.w3(), dn.game().contract, start)
            dn.close_stores()
            ipfs.stop()
        finally:
            anvil.stop()
    print(f"watchtower: {ticks} ticks, {wall:.0f} s (download, re-execution, trace roots, game); game {gid} "
          f"ended at (unit {g.unit_index}, op {g.op_index}), outcome {Outcome(g.outcome).name}")
    print("  game transactions: " + ", ".join(f"{n} {gas:,}" for n, gas, _ in txs))
    moves = [(n, gas) for n, gas, _ in txs if n not in ("challenge", "withdraw", "collect", "resolveTimeout")]
    wk = sum(n[0].upper() + n[1:] in WORKER_MOVES for n, _ in moves)
    step = dict(moves).get("step", 0)
    print(f"  moves {len(moves)} (worker {wk}, challenger {len(moves) - wk}); one-step {step:,} gas; "
          f"total of the moves {sum(gas for _, gas in moves):,} gas; all game transactions "
          f"{sum(gas for _, gas, _ in txs):,} gas")
    print(f"peak RSS of this process from the worker's execution on (the worker, its lie, and the watchtower "
          f"with its own copy of the program): {_mib(_status('VmHWM'))}")
    assert Outcome(g.outcome) == Outcome.CHALLENGER_WON and (g.unit_index, g.op_index) == (0, op)
    assert merkle.tensor_root(view.tail[-1]) != honest.roots[-1]


if __name__ == "__main__":
    main()
