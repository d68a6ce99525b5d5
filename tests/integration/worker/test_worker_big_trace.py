"""Attack 2 of issue #12 on anvil: a poster-challenger posts a program whose honest run is cheap
but whose full trace per unit is large (40 op outputs of 256 KiB, a small argmax output), then
disputes the honest worker's result with a made-up belief and plays the game to the end. The
worker daemon defends from its streaming trace (roots only) with a 1 MiB cache of recomputed op
outputs, a tenth of one unit's trace, and wins; every actor's balance before and after."""

from __future__ import annotations

import numpy as np
import pytest

from gpumesh.client.chain.types import JobState
from gpumesh.client.core import merkle
from gpumesh.client.core.game import Outcome, Phase, Reason, Side, bond_burn
from gpumesh.client.services.accounts import dev_account

pytestmark = pytest.mark.integration
ETH = 10**18
OPS, N, A = 40, 4, 256  # op outputs int8 [4, 256, 256] = 256 KiB each
CACHE = 1 << 20


def _value(env, role: str) -> int:
    """Wallet + stake + every credit of a devnet account."""
    a = env.dn.address(role)
    info = env.registry().info(a)
    return (env.w3.eth.get_balance(a) + info.total + info.unbonding + info.credits
            + env.market().credits(a) + env.dn.game().credits(a))


def test_honest_worker_defends_a_trace_ten_times_its_cache_and_wins(env, tmp_path):
    from gpumesh.node.common.store import StateStore
    from gpumesh.node.dispute.play import int8_prover
    from gpumesh.node.dispute.responder import Responder
    from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace
    from gpumesh.node.runtime.chainprog import chain_program, chain_units
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import save_program, save_units
    from tests.integration.nodes.conftest import Corruption, cheat_trace

    rng = np.random.default_rng(12)
    bundle = chain_program(rng, OPS, N, A, linear=False, argmax=True)
    units = chain_units(rng, bundle, 2)
    folder, inputs = tmp_path / "program", tmp_path / "inputs.safetensors"
    save_program(folder, bundle.program, bundle.weight_arrays)
    save_units(inputs, units)
    trace_bytes = sum(op.desc.out.nbytes for op in bundle.program.ops)
    assert trace_bytes > 10 * CACHE

    roles = ("poster", "worker", "watchtower")
    env.registry(2).stake(2 * ETH)
    before = {r: _value(env, r) for r in roles}
    job_id, _ = env.post(program=folder, inputs=inputs, reward=ETH // 2, stake=ETH, bond=ETH // 10, window=3600)
    worker = env.worker(trace_cache_bytes=CACHE)
    market = env.market()
    env.drive(worker, lambda: market.get_job(job_id).state == JobState.SUBMITTED)

    # The challenger's made-up belief: in unit 1, one element of the last chain op's output raised
    # above the rest of its row, so that the row's argmax (part of the unit output) moves to it.
    ex = Executor(bundle)
    honest = [list(ex.trace(u).outputs) for u in units]
    last = np.frombuffer(honest[1][OPS - 1], dtype=np.int8).reshape(N * A, A).astype(int)
    row = int(np.flatnonzero(last.max(axis=1) < 127)[0])
    col = 1 if last[row].argmax() != 1 else 2
    lie = cheat_trace(bundle, units[1], Corruption(unit=1, op=OPS - 1, element=row * A + col,
                                                   delta=(last[row].max() + 1 - last[row, col]) % 256))
    assert lie[-1] != honest[1][-1]
    roots = (merkle.tensor_root(honest[0][-1]), merkle.tensor_root(lie[-1]))
    belief = PlayerData(Program(len(bundle.program.weights), tuple(bundle.program.descriptors())), roots,
                        lambda u: UnitTrace(lie if u == 1 else honest[u]))
    game = env.dn.game("watchtower", env.dn.w3())
    challenger = Responder(game, StateStore(tmp_path / "challenger.sqlite"))
    gid, _ = game.challenge(job_id, ETH // 10)

    cache = worker.node._trace_cache
    peak = 0
    for _ in range(400):
        if game.get_game(gid).phase == Phase.RESOLVED:
            break
        assert worker.daemon.tick_once(), "worker tick failed"
        peak = max(peak, cache.nbytes)
        assert cache.nbytes <= CACHE
        challenger.play(gid, Side.CHALLENGER, belief, int8_prover(bundle, units))
    g = game.get_game(gid)
    assert g.outcome == Outcome.WORKER_WON and game.resolutions(gid)[-1].reason == Reason.ONE_STEP
    assert (g.unit_index, g.op_index) == (1, OPS - 1), "the game went down to the lie"
    assert peak > 0, "the defence recomputed op outputs through the cache"

    env.anvil.increase_time(3601)
    env.drive(worker, lambda: worker.node.state.get("job", job_id)["status"] == "done")
    challenger.collect(gid)
    after = {r: _value(env, r) for r in roles}
    for r in roles:
        print(f"  {r:<10} before {before[r]:>26}  after {after[r]:>26}  change {after[r] - before[r]:+}")
    print(f"  worker's trace cache peak {peak} bytes of {CACHE}; one unit's full trace {trace_bytes} bytes")
    gas = 10**16  # each side's transactions on the devnet cost well under 0.01 ETH
    assert after["worker"] - before["worker"] > ETH // 2 + (ETH // 10 - bond_burn(ETH // 10)) - gas
    assert before["watchtower"] - after["watchtower"] > ETH // 10
    assert after["poster"] - before["poster"] > -(ETH // 2) - gas
    assert env.registry().info(dev_account(2).address).locked == 0
