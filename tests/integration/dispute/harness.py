"""The on-chain dispute-game harness shared by tests/integration/dispute (ToyStepper) and
tests/integration/verifier (the real Int8Verifier): forge artifacts built into a temporary
FOUNDRY_OUT (no clash with other builds of the checkout), an anvil fixture, `deploy`, and `Chain`
(DisputeGame + MockMarket + a one-step verifier, with a small web3 layer that turns game state +
events into GameSnapshots and strategy actions into transactions) and `play` (alternate the
strategies until the game ends). Test-only; the daemons use gpumesh.client.chain.dispute.
Imported by those folders' conftest.py and tests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from web3 import Web3

from gpumesh.client.core.game import GameSnapshot, Phase, Reason, Side, block_nodes
from gpumesh.node.dispute import actions as A
from gpumesh.node.dispute.strategy import challenger_move, worker_move
from tests.chain_node import start_test_node

ROOT = Path(__file__).resolve().parents[3]
CLOCK = 3600


def build_artifacts(out: Path, sources: Sequence[str]) -> dict[str, tuple[list, str]]:
    """forge build of `sources` (paths from the checkout root) into `out`: name -> (abi, bytecode)."""
    env = dict(os.environ, FOUNDRY_OUT=str(out), FOUNDRY_CACHE_PATH=str(out / "cache"))
    subprocess.run(  # noqa: S603 - fixed argv
        [str(ROOT / "node_modules/.bin/forge"), "build", "--quiet", *sources],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )

    def load(name: str) -> tuple[list, str]:
        doc = json.loads((out / f"{name}.sol" / f"{name}.json").read_text())
        return doc["abi"], doc["bytecode"]["object"]

    return {n: load(n) for n in (Path(s).stem for s in sources)}


def deploy(w3: Web3, artifacts, name: str, *args):
    """Deploy artifact `name` from the first dev account; the web3 contract at its address."""
    abi, bytecode = artifacts[name]
    c = w3.eth.contract(abi=abi, bytecode=bytecode)
    rcpt = w3.eth.wait_for_transaction_receipt(c.constructor(*args).transact({"from": w3.eth.accounts[0]}))
    assert rcpt.status == 1
    return w3.eth.contract(address=rcpt.contractAddress, abi=abi)


@pytest.fixture(scope="session")
def anvil():
    with start_test_node() as a:
        yield a


class Chain:
    """Deployed contracts for one test (k, clock) and the players' accounts."""

    def __init__(self, anvil, artifacts, k: int, stepper: str = "ToyStepper") -> None:
        self.anvil = anvil
        self.w3 = Web3(Web3.HTTPProvider(anvil.url))
        accts = self.w3.eth.accounts
        self.deployer, self.worker, self.challenger, self.anyone = accts[0], accts[1], accts[2], accts[3]
        self.market = deploy(self.w3, artifacts, "MockMarket")
        self.stepper = deploy(self.w3, artifacts, stepper)
        self.game = deploy(self.w3, artifacts, "DisputeGame", self.market.address, self.stepper.address, k, CLOCK)
        self._tx(self.market.functions.setGame(self.game.address), self.deployer)
        self.gas: list[tuple[str, int]] = []

    def _tx(self, fn, sender, value: int = 0):
        rcpt = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
        assert rcpt.status == 1
        return rcpt

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def post_job(self, job_id: int, result_root: bytes, program_root: bytes, inputs_root: bytes,
                 num_units: int, bond: int) -> None:
        ctx = (self.worker, self.deployer, result_root, program_root, inputs_root, num_units, bond,
               self.now() + 10 * CLOCK, 3)
        self._tx(self.market.functions.setJob(job_id, ctx), self.deployer)

    def challenge(self, job_id: int, bond: int) -> int:
        self._tx(self.game.functions.challenge(job_id), self.challenger, value=bond)
        return self.game.functions.gameCount().call()

    def snapshot(self, gid: int) -> GameSnapshot:
        g = self.game.functions.getGame(gid).call()
        (challenger, bond, worker, phase, turn, outcome, height, move_no, last, wclock, cclock, index,
         count, out_bytes, unit, op, num_ops, num_weights, num_units, job_id, node, program_root,
         inputs_root, trace_root, ops_root, op_leaf) = g
        phase, turn = Phase(phase), Side(turn)
        children: tuple[bytes, ...] = ()
        trace_nodes: dict = {}
        leaf = b""
        for ev in self.game.events.ChildrenRevealed.get_logs(from_block=0, argument_filters={"gameId": gid}):
            a = ev["args"]
            if Phase(a["phase"]) == Phase.TRACE_DESCENT:
                trace_nodes.update(block_nodes(a["height"], a["index"], a["children"]))
            if a["moveNo"] == move_no - 1 and phase.is_descent and turn == Side.CHALLENGER:
                children = tuple(a["children"])
        if phase == Phase.ONE_STEP:
            ev = self.game.events.LeafRevealed.get_logs(from_block=0, argument_filters={"gameId": gid})[-1]
            leaf = ev["args"]["leaf"]
        return GameSnapshot(
            game_id=gid, phase=phase, turn=turn, move_no=move_no, height=height, index=index, count=count,
            node=node, split_bits=self.game.functions.splitBits().call(), now=self.now(), last_move_at=last,
            worker_clock=wclock, challenger_clock=cclock, unit_index=unit, op_index=op, num_units=num_units,
            num_ops=num_ops, num_weights=num_weights, out_bytes=out_bytes, trace_root=trace_root,
            ops_root=ops_root, program_root=program_root, inputs_root=inputs_root, children=children,
            leaf=leaf, trace_nodes=trace_nodes,
        )

    def send(self, action: A.Action, sender: str):
        f = self.game.functions
        match action:
            case A.Reveal(g, m, kids):
                fn = f.reveal(g, m, list(kids))
            case A.Pick(g, m, c, child, path):
                fn = f.pick(g, m, c, child, list(path))
            case A.CommitTrace(g, m, root, n, w, ops, path):
                fn = f.commitTrace(g, m, root, n, w, ops, list(path))
            case A.ProveOp(g, m, d, path):
                fn = f.proveOp(g, m, d, list(path))
            case A.RevealLeaf(g, m, leaf):
                fn = f.revealLeaf(g, m, leaf)
            case A.Step(g, m, d, e, leaf, proofs):
                fn = f.step(g, m, d, e, leaf, proofs)
            case A.ResolveTimeout(g):
                fn = f.resolveTimeout(g)
        rcpt = self._tx(fn, sender)
        self.gas.append((type(action).__name__, rcpt.gasUsed))
        return rcpt


def play(chain, gid, worker_data, challenger_data, prover, *, stall: str | None = None, limit: int = 200):
    """Alternate the strategies until the game ends; `stall` names a side that stops answering."""
    for _ in range(limit):
        snap = chain.snapshot(gid)
        if snap.phase == Phase.RESOLVED:
            return chain.game.functions.getGame(gid).call()
        if stall == ("worker" if snap.turn == 0 else "challenger"):
            chain.anvil.increase_time(3601)
            chain.send(challenger_move(chain.snapshot(gid), challenger_data, prover) if stall == "worker"
                       else worker_move(chain.snapshot(gid), worker_data), chain.anyone)
            continue
        if snap.turn == 0:
            chain.send(worker_move(snap, worker_data), chain.worker)
        else:
            chain.send(challenger_move(snap, challenger_data, prover), chain.challenger)
    raise AssertionError("game did not end")


def resolved_reason(chain, gid) -> Reason:
    ev = chain.game.events.GameResolved.get_logs(from_block=0, argument_filters={"gameId": gid})[-1]
    return Reason(ev["args"]["reason"])


