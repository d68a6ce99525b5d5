"""Wiring of a worker from explicit parts (what `gpumesh worker run` and the tests both call):
connect the chain clients with one signer, open the state store, pick the dispute defender, and
return a WorkerNode and the Daemon that ticks it. Nothing here reads the environment: every value
comes from the caller (the CLI builds them from Settings).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
from gpumesh.client.chain.deploy import Deployment
from gpumesh.client.chain.tx import NonceManager, TxSender
from gpumesh.node.common.daemon import Daemon
from gpumesh.node.common.outbox import Outbox
from gpumesh.node.common.store import StateStore
from gpumesh.node.worker.inventory import Inventory, inventory
from gpumesh.node.worker.node import Progress, WorkerConfig, WorkerNode

STATE_FILE = "worker.sqlite"
log = logging.getLogger("gpumesh.worker")


@dataclass
class WorkerApp:
    node: WorkerNode
    daemon: Daemon
    state: StateStore

    def close(self) -> None:
        self.daemon.stop()
        self.daemon.join(60)  # let a tick in flight finish before its state file closes
        self.state.close()


def make_defender(w3, deployment: Deployment, sender: TxSender, state: StateStore, market: JobMarketClient):
    """The worker side of dispute games: the Responder over the deployment's DisputeGame, with the
    same signer (and nonce lock) and the same state store as the rest of the worker."""
    from gpumesh.client.chain.dispute import DisputeGameClient
    from gpumesh.node.dispute.responder import Responder
    from gpumesh.node.worker.defend import ResponderDefender

    client = DisputeGameClient(w3, deployment.dispute_game, sender, from_block=deployment.deploy_block)
    return ResponderDefender(client, Responder(client, state, log=logging.getLogger("gpumesh.worker.dispute")))


def build_worker(*, rpc_url: str, deployment: Deployment, account, store, state_dir: Path,
                 config: WorkerConfig, inv: Inventory | None = None, progress: Progress | None = None,
                 metrics=None, interval: float = 1.0, defend: bool = True) -> WorkerApp:
    w3 = connect(rpc_url, deployment)
    sender = TxSender(w3, account, NonceManager(w3))  # one signer, one nonce lock for every contract
    state = StateStore(Path(state_dir) / STATE_FILE)
    market = JobMarketClient(w3, deployment.market, sender)
    registry = WorkerRegistryClient(w3, deployment.registry, sender)
    outbox = Outbox(sender, state, result_of=market.result_of, log=logging.getLogger("gpumesh.worker.outbox"))
    defender = make_defender(w3, deployment, sender, state, market) if defend else None
    if config.start_block == 0:
        config = replace(config, start_block=deployment.deploy_block)
    holder: dict = {}
    node = WorkerNode(market=market, registry=registry, outbox=outbox, store=store, state=state, config=config,
                      inventory=inv or inventory(), defender=defender, progress=progress, metrics=metrics,
                      stopping=lambda: holder["daemon"].stopping)
    daemon = Daemon("worker", node.tick, interval=interval, log=log)
    holder["daemon"] = daemon
    return WorkerApp(node, daemon, state)
