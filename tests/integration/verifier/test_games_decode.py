"""End to end on anvil: one decode step of the attention block with a KV cache of 15 positions
(examples/attention/decode.py: the cache and the new position in one unit input, sliced; K' =
concat(K, k_new) and V' = concat(V, v_new) committed in the trace), DISPUTED with the real
DisputeGame + Int8Verifier at the KV-cache concat: a worker that corrupts one element of K' (a
cached row, read from the slice of the unit input, or the new row, read from the k linear's output)
loses at that element's one-step and is slashed. Prints the gas per move and the rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.attention.decode import decode_program_json, step_input
from gpumesh.client.core.ops.types import Opcode
from gpumesh.client.core.program import from_json
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import load_program, load_units, save_program
from tests.integration.verifier.test_games_digits import Job, chain, corrupt_worker_loses, game_gas  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ATTENTION = Path(__file__).resolve().parents[3] / "examples" / "attention"
P, D = 15, 64
KK = 7  # op index of K' = concat(K, k_new)


@pytest.fixture(scope="module")
def decode(tmp_path_factory) -> Job:
    """Two units: the last position of two of the block's inputs, with the caches the full block
    computes for the 15 positions before it."""
    full = load_program(ATTENTION)
    ex = Executor(full)
    names = [op.name for op in full.program.ops]
    units = []
    for x in load_units(ATTENTION / "inputs.safetensors", full.program)[:2]:
        tr = ex.trace(x)
        k, v = (np.frombuffer(tr.outputs[names.index(n)], dtype=np.int8).reshape(P + 1, D) for n in "kv")
        units.append(step_input(x.reshape(P + 1, D)[P], k[:P], v[:P]))
    folder = tmp_path_factory.mktemp("decode")
    save_program(folder, from_json(decode_program_json(P)), full.weight_arrays)
    return Job(load_program(folder), np.stack(units))


@pytest.mark.parametrize("element", [3 * D + 5, P * D + 40], ids=["cached-row", "new-row"])
def test_worker_corrupting_the_kv_cache_loses(chain, decode, element):  # noqa: F811
    assert decode.prog.ops[KK].desc.opcode == Opcode.CONCAT and decode.prog.ops[KK].name == "kk"
    moves = corrupt_worker_loses(chain, decode, 1, KK, element)  # asserts the game ended at (1, KK)
    step, summary = game_gas(moves)
    print(f"\ndecode step P={P}: K' element {element}: {summary}")
    assert step < 1_000_000
