"""Worker/poster integration fixtures on the shared node devnet (tests/integration/nodes/conftest.py:
one real anvil with Deploy.s.sol's contracts and one embedded IPFS node per session, each test in an
evm_snapshot). `env.post(...)` publishes a program + inputs with the poster's own code path
(gpumesh.node.jobs.publish) and posts the job; `env.worker(...)` builds an in-process worker
(WorkerNode + Daemon) whose ticks the test drives with `env.drive`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
from gpumesh.client.chain.types import JobSpec
from gpumesh.client.services.accounts import dev_account
from tests.integration.nodes.conftest import *  # noqa: F403 - shared node fixtures

REPO = Path(__file__).resolve().parents[3]
MLP = REPO / "examples/digits/mlp"
MLP_INPUTS = REPO / "examples/digits/data/test_inputs_mlp.safetensors"
LABELS = REPO / "examples/digits/data/test_labels.json"
ETH = 10**18
POSTER, WORKER, OTHER = 1, 2, 3


@dataclass
class Env:
    anvil: object
    dep: object
    dep_path: Path
    w3: object
    ipfs: object
    tmp: Path
    dn: object = None  # the shared NodeDevnet
    apps: list = field(default_factory=list)

    def store(self):
        return self.dn.store()  # closed by the shared fixture after the test

    def market(self, i: int | None = None) -> JobMarketClient:
        if i is None:
            return JobMarketClient(self.w3, self.dep.market)
        return JobMarketClient.with_account(self.w3, self.dep.market, dev_account(i))

    def registry(self, i: int | None = None) -> WorkerRegistryClient:
        if i is None:
            return WorkerRegistryClient(self.w3, self.dep.registry)
        return WorkerRegistryClient.with_account(self.w3, self.dep.registry, dev_account(i))

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def post_spec(self, spec_cid: str, program_root: bytes, inputs_root: bytes, units: int, *,
                  reward: int = ETH // 2, stake: int = ETH, bond: int = ETH // 10, window: int = 600,
                  exec_time: int = 3600, min_gpu: int = 0, poster: int = POSTER) -> int:
        spec = JobSpec(spec_cid=spec_cid, program_root=program_root, inputs_root=inputs_root, num_units=units,
                       required_stake=stake, claim_deadline=self.now() + 3600, execution_time=exec_time,
                       challenge_window=window, min_gpu_memory_mib=min_gpu, dispute_bond=bond)
        job_id, _ = self.market(poster).post_job(spec, reward)
        return job_id

    def post(self, program=MLP, inputs=MLP_INPUTS, **kw) -> tuple[int, object]:
        from gpumesh.node.jobs.publish import publish_job

        pub = publish_job(self.store(), program, inputs)
        s = pub.spec
        return self.post_spec(pub.spec_cid, s.program_root, s.inputs_root, s.num_units, **kw), pub

    def worker(self, i: int = WORKER, name: str = "w", rpc_url: str | None = None, **cfg):
        from gpumesh.node.worker.app import build_worker
        from gpumesh.node.worker.node import WorkerConfig

        cfg.setdefault("retry_seconds", 0.0)
        cfg.setdefault("claim_stagger", 0.0)  # tests that race workers set it
        app = build_worker(rpc_url=rpc_url or self.anvil.url, deployment=self.dep, account=dev_account(i), store=self.store(),
                           state_dir=self.tmp / f"worker-{name}", config=WorkerConfig(**cfg), interval=0.05)
        self.apps.append(app)
        return app

    @staticmethod
    def drive(app, until, max_ticks: int = 200) -> None:
        """Tick the worker until `until()` is true; every tick must succeed."""
        for _ in range(max_ticks):
            if until():
                return
            assert app.daemon.tick_once(), "a worker tick failed (see the captured log)"
        assert until(), "condition not reached"


@pytest.fixture()
def env(devnet, tmp_path):  # noqa: F811 - `devnet` is the shared fixture imported above
    e = Env(devnet.anvil, devnet.deployment, devnet.deployment_path, connect(devnet.rpc_url, devnet.deployment),
            devnet.ipfs, tmp_path, devnet)
    try:
        yield e
    finally:
        for app in e.apps:
            app.close()

