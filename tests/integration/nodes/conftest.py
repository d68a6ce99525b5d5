"""Shared fixtures for the node tests (worker, watchtower, poster): ONE real anvil with the real
deployment (gpumesh.client.chain.deploy of contracts/script/Deploy.s.sol), ONE embedded IPFS node,
the funded dev accounts by role, and helpers to post a digits job and to play a (possibly cheating)
worker by hand.

Use from another test folder by importing, never copying (the session resources are shared through
a reference-counted cache, so two folders in one pytest run still start one anvil and one node):

    # tests/integration/<yours>/conftest.py
    from tests.integration.nodes.conftest import *  # noqa: F403 - shared node fixtures

Fixtures:
- `node_devnet` (session): the NodeDevnet (anvil, deployment, IPFS node, accounts).
- `devnet` (function): the same NodeDevnet inside an evm_snapshot that is reverted afterwards, so
  tests do not see each other's jobs (IPFS content is content-addressed and simply stays).

Roles (dev accounts of the anvil mnemonic): poster=dev1, worker=dev2, watchtower=dev3,
watchtower2=dev4, other=dev5, cheater=dev6.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpumesh.client.chain.anvil import AnvilProcess
from gpumesh.client.chain.deploy import Deployment, deploy
from gpumesh.client.services.accounts import dev_account
from gpumesh.ipfs.node import EmbeddedNode
from tests.chain_node import start_test_node

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "examples" / "digits"
UNBONDING = 3600
ROLES = {"deployer": 0, "poster": 1, "worker": 2, "watchtower": 3, "watchtower2": 4, "other": 5, "cheater": 6}
ETH = 10**18

__all__ = [
    "ETH", "ROLES", "Corruption", "NodeDevnet", "PostedJob", "SubmittedJob", "cheat_trace", "devnet",
    "node_devnet", "post_digits_job", "submit_as_worker",
]


# ---------------------------------------------------------------- the devnet


@dataclass
class NodeDevnet:
    anvil: AnvilProcess
    deployment: Deployment
    deployment_path: Path
    ipfs: EmbeddedNode
    tmp: Path
    _stores: list = field(default_factory=list)

    @property
    def rpc_url(self) -> str:
        return self.anvil.url

    @property
    def ipfs_api(self) -> str:
        return self.ipfs.api_multiaddr

    def account(self, role: str):
        """The LocalAccount of a role name (or 'devN')."""
        if role.startswith("dev"):
            return dev_account(int(role[3:]))
        return dev_account(ROLES[role])

    def address(self, role: str) -> str:
        return self.account(role).address

    def w3(self):
        from gpumesh.client.chain.contracts import connect

        return connect(self.anvil.url, self.deployment)

    def market(self, role: str | None = None, w3=None):
        from gpumesh.client.chain.contracts import JobMarketClient

        w3 = w3 or self.w3()
        if role is None:
            return JobMarketClient(w3, self.deployment.market)
        return JobMarketClient.with_account(w3, self.deployment.market, self.account(role))

    def registry(self, role: str | None = None, w3=None):
        from gpumesh.client.chain.contracts import WorkerRegistryClient

        w3 = w3 or self.w3()
        if role is None:
            return WorkerRegistryClient(w3, self.deployment.registry)
        return WorkerRegistryClient.with_account(w3, self.deployment.registry, self.account(role))

    def game(self, role: str | None = None, w3=None):
        """DisputeGameClient of the deployment's game (gpumesh.client.chain.dispute)."""
        from gpumesh.client.chain.dispute import DisputeGameClient

        w3 = w3 or self.w3()
        if role is None:
            return DisputeGameClient(w3, self.deployment.dispute_game, from_block=self.deployment.deploy_block)
        return DisputeGameClient.with_account(w3, self.deployment.dispute_game, self.account(role),
                                              from_block=self.deployment.deploy_block)

    def store(self):
        """A KuboStore on the embedded node (every read verified against its CID)."""
        from gpumesh.ipfs.kubo import KuboStore

        s = KuboStore(self.ipfs_api)
        self._stores.append(s)
        return s

    def now(self) -> int:
        return self.w3().eth.get_block("latest")["timestamp"]

    def has_dispute_game(self) -> bool:
        return bool(self.w3().eth.get_code(self.deployment.dispute_game))

    def close_stores(self) -> None:
        while self._stores:
            self._stores.pop().close()


_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def _acquire(tmp_path_factory) -> NodeDevnet:
    with _SHARED_LOCK:
        if "devnet" not in _SHARED:
            tmp = tmp_path_factory.mktemp("node-devnet")
            anvil = start_test_node()
            try:
                dep = deploy(anvil.url, dev_account(0).key.hex(), unbonding_delay=UNBONDING)
                path = tmp / "deployment.json"
                dep.save(path)
                ipfs = EmbeddedNode(tmp / "ipfs-repo")
                ipfs.start()
            except BaseException:
                anvil.stop()
                raise
            dn = NodeDevnet(anvil, dep, path, ipfs, tmp)
            assert dn.has_dispute_game(), "the deployment has no DisputeGame code"
            _SHARED["devnet"] = dn
            _SHARED["refs"] = 0
        _SHARED["refs"] += 1
        return _SHARED["devnet"]


def _release() -> None:
    with _SHARED_LOCK:
        _SHARED["refs"] -= 1
        if _SHARED["refs"] == 0:
            dn: NodeDevnet = _SHARED.pop("devnet")
            dn.close_stores()
            dn.ipfs.stop()
            dn.anvil.stop()


@pytest.fixture(scope="session")
def node_devnet(tmp_path_factory):
    dn = _acquire(tmp_path_factory)
    try:
        yield dn
    finally:
        _release()


@pytest.fixture()
def devnet(node_devnet):
    snap = node_devnet.anvil.rpc("evm_snapshot")
    try:
        yield node_devnet
    finally:
        node_devnet.close_stores()
        assert node_devnet.anvil.rpc("evm_revert", [snap]) is True


# ---------------------------------------------------------------- posting a digits job


@dataclass(frozen=True)
class PostedJob:
    job_id: int
    spec_cid: str
    program_cid: str
    inputs_cid: str
    program_dir: Path  # the clean program folder that was uploaded
    units: np.ndarray  # [numUnits, *input.shape] int8
    program_root: bytes
    inputs_root: bytes
    reward: int
    stake: int
    bond: int


def post_digits_job(dn: NodeDevnet, *, model: str = "cnn", num_units: int = 4, reward: int = ETH,
                    stake: int = 2 * ETH, bond: int = ETH // 2, challenge_window: int = 3600,
                    exec_time: int = 3600, claim_window: int = 3600, poster: str = "poster") -> PostedJob:
    """Upload the digits `model` program (program.json + weights only) and the first `num_units`
    units of its test inputs, put the job spec on IPFS, and post the job; roots computed here from
    the files (gpumesh.client.core.program), independently of any node code under test."""
    import shutil

    from gpumesh.client.chain.types import JobSpec
    from gpumesh.client.core.jobspec import JobSpecDoc
    from gpumesh.client.core.program import inputs_root
    from gpumesh.node.runtime.files import PROGRAM_FILE, WEIGHTS_FILE, load_program, load_units, save_units

    src = DIGITS / model
    folder = Path(dn.tmp) / f"job-{model}-{num_units}-{reward}-{bond}" / "program"
    if not folder.exists():
        folder.mkdir(parents=True)
        for name in (PROGRAM_FILE, WEIGHTS_FILE):
            shutil.copyfile(src / name, folder / name)
    bundle = load_program(folder)
    units = load_units(DIGITS / "data" / f"test_inputs_{model}.safetensors", bundle.program)[:num_units]
    inputs_file = folder.parent / "inputs.safetensors"
    save_units(inputs_file, units)
    store = dn.store()
    program_cid = store.add_path(folder)
    inputs_cid = store.add_path(inputs_file)
    proot = bundle.program.root()
    iroot = inputs_root(bundle.program, bundle.weight_bytes, [np.ascontiguousarray(u).tobytes() for u in units])
    doc = JobSpecDoc(program_cid, inputs_cid, proot, iroot, num_units, meta={"model": f"digits-{model}"})
    spec_cid = store.add_bytes(doc.to_bytes())
    spec = JobSpec(spec_cid=spec_cid, program_root=proot, inputs_root=iroot, num_units=num_units,
                   required_stake=stake, claim_deadline=dn.now() + claim_window, execution_time=exec_time,
                   challenge_window=challenge_window, min_gpu_memory_mib=0, dispute_bond=bond)
    job_id, _ = dn.market(poster).post_job(spec, reward)
    return PostedJob(int(job_id), spec_cid, program_cid, inputs_cid, folder, units, proot, iroot,
                     reward, stake, bond)


# ---------------------------------------------------------------- a hand-played (cheating) worker


@dataclass(frozen=True)
class Corruption:
    """Add `delta` (wrapping in the dtype) to element `element` of op `op`'s output in unit
    `unit`; later ops are recomputed from the corrupted tensor when `propagate`."""

    unit: int
    op: int
    element: int
    delta: int = 1
    propagate: bool = True


def cheat_trace(bundle, unit_input: np.ndarray, c: Corruption) -> list[bytes]:
    """Every op output of one unit with corruption `c` applied (the runtime's exact kernels)."""
    import torch

    from gpumesh.client.core.ops.types import SlotKind
    from gpumesh.node.runtime import kernels
    from gpumesh.node.runtime.files import NP_DTYPE

    prog = bundle.program
    weights = [torch.from_numpy(np.array(bundle.weight_arrays[w.name], copy=True)) for w in prog.weights]
    t = prog.input.type
    x = torch.from_numpy(np.ascontiguousarray(unit_input, dtype=NP_DTYPE[t.dtype]).reshape(t.shape))

    def run(d, outs):
        return kernels.run_op(d, [weights[s.index] if s.kind == SlotKind.WEIGHT else x
                                  if s.kind == SlotKind.UNIT_INPUT else outs[s.index] for s in d.inputs])

    honest: list = []
    outs: list = []
    with torch.inference_mode():
        for j, op in enumerate(prog.ops):
            h = run(op.desc, honest)
            honest.append(h)
            if j < c.op:
                outs.append(h)
            elif j == c.op:
                arr = h.numpy().copy()
                flat = arr.reshape(-1)
                info = np.iinfo(flat.dtype)
                span = int(info.max) - int(info.min) + 1
                flat[c.element] = (int(flat[c.element]) + c.delta - int(info.min)) % span + int(info.min)
                outs.append(torch.from_numpy(arr))
            else:
                outs.append(run(op.desc, outs) if c.propagate else h)
    return [np.ascontiguousarray(o.numpy()).tobytes() for o in outs]


@dataclass(frozen=True)
class SubmittedJob:
    job: PostedJob
    outputs: np.ndarray  # what the worker published
    unit_roots: tuple[bytes, ...]
    result_root: bytes
    outputs_cid: str
    traces: dict[int, list[bytes]]  # the cheated units' (corrupt) traces; others: honest re-execution
    bundle: Any

    def player_data(self):
        """The worker's PlayerData (gpumesh.node.dispute.strategy) for the game it must defend."""
        from gpumesh.node.dispute.strategy import PlayerData, Program, UnitTrace
        from gpumesh.node.runtime.executor import Executor

        ex = Executor(self.bundle)
        prog = Program(len(self.bundle.program.weights), tuple(self.bundle.program.descriptors()))
        cache: dict[int, UnitTrace] = {}

        def trace(u: int) -> UnitTrace:
            if u not in cache:
                outs = self.traces.get(u) or list(ex.trace(self.job.units[u]).outputs)
                cache[u] = UnitTrace(outs)
            return cache[u]

        return PlayerData(prog, self.unit_roots, trace)


def submit_as_worker(dn: NodeDevnet, job: PostedJob, *, worker: str = "worker",
                     corruptions: tuple[Corruption, ...] = (), stake: int | None = None,
                     publish: np.ndarray | None = None, outputs_cid: str | None = None) -> SubmittedJob:
    """Stake, claim, execute (with `corruptions`), publish the outputs file and submit: the steps a
    worker daemon takes, by hand, so watchtower tests control exactly what is committed.
    `publish` replaces the outputs file's content (a worker whose file does not match its root);
    `outputs_cid` submits that CID and uploads nothing (outputs nobody serves)."""
    from gpumesh.client.core import merkle
    from gpumesh.client.core.program import result_root
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import from_bytes, load_program, save_outputs

    registry, market = dn.registry(worker), dn.market(worker)
    if registry.free_stake(dn.address(worker)) < job.stake:
        registry.stake(stake or job.stake)
    market.claim_job(job.job_id)
    bundle = load_program(job.program_dir)
    res = Executor(bundle).run(job.units)
    outputs = res.outputs.copy()
    traces: dict[int, list[bytes]] = {}
    for c in corruptions:
        traces[c.unit] = cheat_trace(bundle, job.units[c.unit], c)
        outputs[c.unit] = from_bytes(traces[c.unit][-1], bundle.program.output_type)
    roots = tuple(merkle.tensor_root(np.ascontiguousarray(o).tobytes()) for o in outputs)
    rr = result_root(list(roots))
    out_file = job.program_dir.parent / f"outputs-{rr.hex()[:12]}.safetensors"
    if outputs_cid is None:
        save_outputs(out_file, outputs if publish is None else publish)
        outputs_cid = dn.store().add_path(out_file)
    market.submit_result(job.job_id, rr, outputs_cid)
    return SubmittedJob(job, outputs, roots, rr, outputs_cid, traces, bundle)
