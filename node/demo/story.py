"""`gpumesh demo run`: the whole gpumesh story on a local devnet, from the product's own parts.

1. build: export the digits CNN (float state dict + calibration -> int8 program), float vs int8 accuracy
2. an honest job: the poster publishes program + inputs on IPFS and posts with the reward in escrow;
   a worker stakes, validates, claims, executes, submits; a watchtower re-executes every unit and
   finds it right; the challenge window passes; the worker finalizes and is paid; the poster fetches
   the outputs, verifies them against the on-chain result root and scores the predictions
3. a cheating job: a worker corrupts ONE element deep in one unit; the watchtower's re-execution
   disagrees, it challenges, the bisection game runs on-chain down to one element of one op, the
   Int8Verifier recomputes it, the cheater is slashed and the poster refunded
4-5. text generation (generation.py): the byte GPT's generation program as a job, paid and its text
   verified; then a cheater flipping one attention probability of a later token, slashed at that
   softmax element

Parts are driven in-process by ticking their daemons in turn (the same tick a `worker run` /
`watchtower run` daemon calls), so the story is deterministic and fast. The only devnet-specific
step is fast-forwarding the challenge window with anvil's evm_increaseTime, and it says so.
Adapter-level orchestration: imports the chain, IPFS and runtime adapters and the node services.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
from gpumesh.client.chain.deploy import Deployment, repo_root
from gpumesh.client.chain.dispute import DisputeGameClient
from gpumesh.client.chain.tx import NonceManager
from gpumesh.client.chain.types import JobSpec, JobState
from gpumesh.client.core.errors import GpumeshError
from gpumesh.client.core.game import slash_paid
from gpumesh.client.services.accounts import dev_account
from gpumesh.ipfs.kubo import KuboStore
from gpumesh.node.common.store import StateStore
from gpumesh.node.demo.report import DemoReport, DisputeFigures
from gpumesh.node.jobs.publish import publish_job
from gpumesh.node.jobs.results import accuracy, fetch_result
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.files import ProgramBundle, load_program, load_units
from gpumesh.node.watchtower.tower import Watchtower, WatchtowerConfig
from gpumesh.node.worker.app import build_worker
from gpumesh.node.worker.faults import Fault, executor_for, run_unit_at
from gpumesh.node.worker.node import WorkerConfig

ETH = 10**18
Echo = Callable[[str], None]


class DemoError(GpumeshError):
    exit_code = 7


@dataclass(frozen=True)
class DemoConfig:
    rpc_url: str
    deployment: Deployment
    ipfs_api: str
    work: Path
    reward: int = ETH
    stake: int = 2 * ETH
    bond: int = ETH // 2
    challenge_window: int = 600
    max_ticks: int = 4000


ROLES = {"poster": 1, "worker": 2, "watchtower": 3, "cheater": 4}


class Story:
    def __init__(self, cfg: DemoConfig, echo: Echo) -> None:
        self.cfg, self.echo = cfg, echo
        self.w3 = connect(cfg.rpc_url, cfg.deployment)
        self.store = KuboStore(cfg.ipfs_api)
        self.nonces = NonceManager(self.w3)
        self.acct = {name: dev_account(i) for name, i in ROLES.items()}
        dep = cfg.deployment
        self.market = {n: JobMarketClient.with_account(self.w3, dep.market, a, self.nonces) for n, a in self.acct.items()}
        self.registry = {n: WorkerRegistryClient.with_account(self.w3, dep.registry, a, self.nonces)
                         for n, a in self.acct.items()}
        self.report = DemoReport()
        self.examples = repo_root() / "examples" / "digits"

    # ------------------------------------------------------------------ helpers
    def _timed(self, name: str, fn):
        t = time.perf_counter()
        out = fn()
        self.report.seconds[name] = time.perf_counter() - t
        return out

    def _eth(self, wei: int) -> str:
        return f"{wei / ETH:.4f}"

    def _snapshot(self, label: str) -> dict[str, dict[str, str]]:
        game = DisputeGameClient(self.w3, self.cfg.deployment.dispute_game)
        rows = {}
        for name, a in self.acct.items():
            info = self.registry[name].info(a.address)
            rows[name] = {
                "wallet": self._eth(self.w3.eth.get_balance(a.address)),
                "stake": self._eth(info.total),
                "withdrawable": self._eth(self.market[name].credits(a.address) + info.credits + game.credits(a.address)),
            }
        self.report.balances[label] = rows
        return rows

    def _print_balances(self, label: str) -> None:
        rows = self._snapshot(label)
        self.echo(f"  balances ({label}), ETH:   wallet      stake  withdrawable")
        for name, r in rows.items():
            self.echo(f"    {name:<11} {r['wallet']:>12} {r['stake']:>10} {r['withdrawable']:>13}")

    def _time_travel(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    # ------------------------------------------------------------------ 1. build
    def build(self) -> tuple[Path, Path, list[int]]:
        import json

        import torch
        from safetensors.torch import load_file

        from gpumesh.node.runtime.evaluate import int8_predictions
        from gpumesh.node.runtime.export import export_model
        from gpumesh.node.runtime.files import save_program

        self.echo("\n== 1. build: export the digits CNN to an int8 program")
        import importlib.util

        spec = importlib.util.spec_from_file_location("gpumesh_demo_models", self.examples / "models.py")
        models = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(models)  # the poster's OWN model code, run on the poster's machine
        model = models.cnn()
        model.load_state_dict(load_file(str(self.examples / "cnn" / "state_dict.safetensors")))
        model.eval()
        calib = load_file(str(self.examples / "data" / "calib.safetensors"))
        x_cal = next(iter(calib.values())).float()
        prog, arrays = export_model(model, x_cal, 32, argmax=True, meta={"model": "examples/digits DigitsCNN"})
        out = self.cfg.work / "digits-cnn"
        save_program(out, prog, arrays)
        xe = next(iter(load_file(str(self.examples / "data" / "test_float.safetensors")).values())).float()
        labels = json.loads((self.examples / "data" / "test_labels.json").read_text())
        y = np.array(labels)
        with torch.no_grad():
            fa = float((model(xe).argmax(1).numpy() == y).mean())
        ia = float((int8_predictions(load_program(out), xe.numpy()) == y).mean())
        self.report.float_accuracy, self.report.int8_accuracy = fa, ia
        self.report.program_root = "0x" + prog.root().hex()
        self.echo(f"  {len(prog.ops)} ops, {len(prog.weights)} weight tensors, program root {self.report.program_root[:18]}…")
        self.echo(f"  held-out digits: float {fa:.2%}  int8 {ia:.2%}")
        inputs = self._inputs_for(out, xe.numpy())
        return out, inputs, labels

    def _inputs_for(self, program: Path, x: np.ndarray) -> Path:
        """Quantize the held-out samples with the program's input scale into units of 32."""
        from gpumesh.node.runtime.evaluate import quantize_units

        bundle = load_program(program)
        units = quantize_units(bundle.program, x)
        path = self.cfg.work / "inputs.safetensors"
        from gpumesh.node.runtime.files import save_units

        save_units(path, units)
        return path

    # ------------------------------------------------------------------ jobs
    def post(self, program: Path, inputs: Path, meta: dict) -> int:
        pub = publish_job(self.store, program, inputs, meta=meta)
        now = self.w3.eth.get_block("latest")["timestamp"]
        spec = JobSpec(spec_cid=pub.spec_cid, program_root=pub.spec.program_root, inputs_root=pub.spec.inputs_root,
                       num_units=pub.spec.num_units, required_stake=self.cfg.stake, claim_deadline=now + 3600,
                       execution_time=3600, challenge_window=self.cfg.challenge_window, min_gpu_memory_mib=0,
                       dispute_bond=self.cfg.bond)
        job_id, res = self.market["poster"].post_job(spec, self.cfg.reward)
        self.echo(f"  poster: job {job_id} posted ({pub.spec.num_units} units, reward {self._eth(self.cfg.reward)} ETH "
                  f"in escrow, spec {pub.spec_cid[:12]}…, {res.gas_used:,} gas)")
        return int(job_id)

    def worker(self, name: str, fault: Fault | None = None):
        state = self.cfg.work / f"{name}-state"
        return build_worker(rpc_url=self.cfg.rpc_url, deployment=self.cfg.deployment, account=self.acct[name],
                            store=self.store, state_dir=state,
                            config=WorkerConfig(fault=fault, tick_budget_seconds=30.0), interval=0.1)

    def watchtower(self) -> Watchtower:
        dep = self.cfg.deployment
        game = DisputeGameClient.with_account(self.w3, dep.dispute_game, self.acct["watchtower"], self.nonces,
                                              from_block=dep.deploy_block)
        state = StateStore(self.cfg.work / "watchtower-state" / "watchtower.sqlite")
        return Watchtower(market=JobMarketClient(self.w3, dep.market), registry=WorkerRegistryClient(self.w3, dep.registry),
                          game=game, content=self.store, state=state,
                          executor_factory=lambda b: Executor(b, "cpu"),
                          config=WatchtowerConfig(sample_rate=1.0), from_block=dep.deploy_block)

    def _until(self, what: str, cond: Callable[[], bool], *tickers: Callable[[], None]) -> None:
        for _ in range(self.cfg.max_ticks):
            if cond():
                return
            for t in tickers:
                t()
        raise DemoError(f"demo stalled waiting for {what}")

    def _state(self, job_id: int) -> JobState:
        return self.market["poster"].get_job(job_id).state

    # ------------------------------------------------------------------ 2. the honest job
    def honest(self, program: Path, inputs: Path, labels: list[int]) -> None:
        self.echo("\n== 2. an honest job: post, work, watch, pay, verify")
        self._print_balances("start")
        for name in ("worker", "cheater"):
            self.registry[name].stake(self.cfg.stake)
        self.echo(f"  worker and cheater each stake {self._eth(self.cfg.stake)} ETH")
        job = self.post(program, inputs, {"labels": labels})
        self.report.honest_job = job
        self.work_and_pay(job, lambda: f"executed {self.market['poster'].get_job(job).num_units} units")
        res = fetch_result(self.store, self.market["poster"], self.market["poster"].get_job(job),
                           from_block=self.cfg.deployment.deploy_block)
        preds = res.predictions()
        acc, n = accuracy(preds, labels)
        self.report.honest_accuracy = acc
        self.report.predictions = [int(p) for p in preds[:20]]
        self.echo(f"  poster: outputs verified against the on-chain result root; accuracy {acc:.2%} on {n} digits")
        self.echo(f"  first predictions: {' '.join(str(int(p)) for p in preds[:20])}")
        self.echo(f"  true labels:       {' '.join(str(v) for v in labels[:20])}")
        self._print_balances("after the honest job")

    def work_and_pay(self, job: int, did: Callable[[], str]) -> None:
        """The honest worker validates, claims, runs and submits `job` (`did()` says what it ran); the
        watchtower re-executes and agrees; the challenge window passes; the worker finalizes and
        withdraws its reward."""
        worker, tower = self.worker("worker"), self.watchtower()
        try:
            t = time.perf_counter()
            self._until("the honest worker's result", lambda: self._state(job) == JobState.SUBMITTED, worker.node.tick)
            self.echo(f"  worker: validated the data against the chain, claimed, {did()} and submitted "
                      f"({time.perf_counter() - t:.1f}s)")
            tower.run_until_idle()
            rec = tower.state.get("job", job) or {}
            self.echo(f"  watchtower: {rec.get('line') or rec.get('status', '?')}")
            if rec.get("status") != "ok":
                raise DemoError(f"the watchtower did not accept the honest result ({rec.get('status')})")
            self.echo(f"  devnet: fast-forward the {self.cfg.challenge_window}s challenge window (evm_increaseTime)")
            self._time_travel(self.cfg.challenge_window + 1)
            self._until("finalization", lambda: self._state(job) == JobState.FINALIZED, worker.node.tick)
            self._until("the worker's withdrawal",
                        lambda: self.market["worker"].credits(self.acct["worker"].address) == 0, worker.node.tick)
            self.echo(f"  worker: finalized job {job} and withdrew the {self._eth(self.cfg.reward)} ETH reward")
        finally:
            worker.close()
            tower.state.close()

    # ------------------------------------------------------------------ 3. the cheating job
    def pick_fault(self, program: Path, inputs: Path) -> Fault:
        """A corruption deep in the program that really changes the last unit's output (most single
        flips vanish in the final argmax: those are not wrong results, nothing to catch)."""
        bundle: ProgramBundle = load_program(program)
        units = load_units(inputs, bundle.program)
        u = len(units) - 1
        honest = Executor(bundle, "cpu").run_unit(units[u])
        ops = bundle.program.ops
        for op in sorted(range(len(ops)), key=lambda i: abs(i - len(ops) // 2)):
            n = ops[op].desc.out.count
            for e in range(0, n, max(1, n // 64)):
                f = Fault(u, op, e)
                if not np.array_equal(run_unit_at(executor_for(bundle, "cpu", f), u, units[u]), honest):
                    self.report.dispute.first_wrong_op = f"op {op} ({ops[op].name}, {ops[op].desc.opcode.name})"
                    return f
        raise DemoError("found no single-element corruption that changes the output")

    def cheat(self, program: Path, inputs: Path, labels: list[int]) -> None:
        self.echo("\n== 3. a cheating worker: one wrong element, caught and slashed on-chain")
        fault = self.pick_fault(program, inputs)
        d = self.report.dispute
        d.fault = f"unit {fault.unit}, {d.first_wrong_op}, element {fault.element}"
        self.echo(f"  cheater: will flip one element: {d.fault}")
        before = self._snapshot("before the dispute")
        job = self.post(program, inputs, {"labels": labels})
        self.report.cheat_job = job
        cheater, tower = self.worker("cheater", fault), self.watchtower()
        try:
            self._until("the cheater's result", lambda: self._state(job) == JobState.SUBMITTED, cheater.node.tick)
            self.echo("  cheater: claimed, executed (with the flip) and submitted a wrong result root")
            self.dispute(job, d, tower, cheater)
        finally:
            cheater.close()
            tower.state.close()
        self.echo(f"  watchtower: re-executed, found unit {fault.unit} wrong, opened game {d.game_id} with a "
                  f"{self._eth(self.cfg.bond)} ETH bond")
        self.echo(f"  game {d.game_id}: {d.outcome} ({d.reason}) after {d.moves_worker} worker and "
                  f"{d.moves_challenger} challenger moves; the contract recomputed one element of {d.first_wrong_op}")
        self.echo(f"  dispute gas: {d.gas_total:,} total, largest move {d.gas_max_move:,}, one-step {d.gas_step:,}; "
                  f"wall time {d.wall_seconds:.1f}s")
        refund, _ = self.market["poster"].withdraw()
        self.echo(f"  poster: withdrew the {self._eth(refund)} ETH refund of job {job}")
        after = self._snapshot("after the dispute")
        self._print_balances("after the dispute")
        lost = float(before["cheater"]["stake"]) - float(after["cheater"]["stake"])
        paid = slash_paid(self.cfg.stake)  # the job locked the whole stake (4.11)
        self.echo(f"  cheater lost {lost:.4f} ETH of stake ({self._eth(paid)} ETH to the watchtower that opened the "
                  f"game, the rest burned); state of job {job}: {self._state(job).name}")

    def dispute(self, job: int, d: DisputeFigures, tower: Watchtower, cheater) -> None:
        """Tick the watchtower and the cheater until every game of `job` is resolved; fill `d` from
        the chain: outcome, where the game ended (unit, op, the stepped element), moves and gas."""
        game_client = DisputeGameClient(self.w3, self.cfg.deployment.dispute_game)
        start_block = self.w3.eth.block_number
        t = time.perf_counter()

        def resolved() -> bool:
            games = game_client.games_of_job(job)
            return bool(games) and all(game_client.get_game(g).resolved for g in games)

        self._until("the dispute's end", resolved, tower.tick, cheater.node.tick)
        d.wall_seconds = time.perf_counter() - t
        tower.run_until_idle()
        (gid,) = game_client.games_of_job(job)
        d.game_id = int(gid)
        res = game_client.resolutions(game_id=gid)[0]
        d.outcome, d.reason = str(res.outcome.name), str(res.reason.name)
        g = game_client.get_game(gid)
        d.unit, d.op = int(g.unit_index), int(g.op_index)
        self._count_moves(start_block, self.w3.eth.block_number, job, d)

    def _count_moves(self, first: int, last: int, job: int, d: DisputeFigures) -> None:
        """The transactions of game d.game_id: its challenge and every move (a withdraw of the
        winnings is not a move of the game)."""
        game = self.cfg.deployment.dispute_game.lower()
        tower, cheater = self.acct["watchtower"].address.lower(), self.acct["cheater"].address.lower()
        contract = DisputeGameClient(self.w3, self.cfg.deployment.dispute_game).contract
        for n in range(first + 1, last + 1):
            for tx in self.w3.eth.get_block(n, full_transactions=True)["transactions"]:
                if (tx["to"] or "").lower() != game:
                    continue
                fn, args = contract.decode_function_input(tx["input"])
                if args.get("gameId", -1) != d.game_id and not (fn.fn_name == "challenge" and args["jobId"] == job):
                    continue
                gas = self.w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"]
                sender = tx["from"].lower()
                d.moves_challenger += sender == tower
                d.moves_worker += sender == cheater
                d.gas_total += gas
                d.gas_max_move = max(d.gas_max_move, gas)
                by = "watchtower" if sender == tower else "cheater" if sender == cheater else sender
                d.moves.append({"by": by, "move": fn.fn_name, "gas": gas})
                if fn.fn_name == "step":
                    d.gas_step, d.element = gas, int(args["elementIndex"])
                    d.moves[-1]["leaf"] = bytes(args["leaf"]).hex()


class _EchoHandler(logging.Handler):
    """The daemons' own warnings (a mismatch found, a job slashed) shown in the story's layout."""

    def __init__(self, echo: Echo) -> None:
        super().__init__(logging.WARNING)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        self.echo(f"    [{record.name.removeprefix('gpumesh.')}] {record.getMessage()}")


def run_story(cfg: DemoConfig, echo: Echo) -> DemoReport:
    log = logging.getLogger("gpumesh")
    handler, saved = _EchoHandler(echo), (log.level, log.propagate)
    log.setLevel(logging.WARNING)
    log.addHandler(handler)
    log.propagate = False
    try:
        story = Story(cfg, echo)
        t = time.perf_counter()
        program, inputs, labels = story._timed("build", story.build)
        story._timed("honest job", lambda: story.honest(program, inputs, labels))
        story._timed("cheating job", lambda: story.cheat(program, inputs, labels))
        from gpumesh.node.demo.generation import run_generation  # parts 4-5 (it imports this module)

        run_generation(story)
        story.report.seconds["total"] = time.perf_counter() - t
        story.store.close()
        return story.report
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
