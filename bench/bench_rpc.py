"""RPC requests per worker per minute on a real anvil, idle and busy (issue #15, "RPC efficiency").

One anvil with the real deployment (1-second blocks by default, as a public chain ticks; `--automine`
mines one block per transaction), one embedded IPFS node, one staked worker daemon ticking at its
default 1-second interval in this process. Every JSON-RPC request the worker's thread makes is
counted at the transport (web3's HTTPProvider.make_request / make_batch_request, patched at the
class, so the count does not depend on the worker's own accounting and also measures older code),
grouped by method. Idle: no jobs for `--idle` seconds. Busy: `--jobs` digits MLP jobs posted at
once, counted from the first post until the worker has submitted all of them.

Usage: python bench/bench_rpc.py [--idle 30] [--jobs 4] [--automine] [--ws]
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ETH = 10**18
WORKER_THREAD = "worker"  # the Daemon's thread name: only the worker's requests are counted


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_method: collections.Counter[str] = collections.Counter()

    def add(self, method: str, n: int = 1) -> None:
        if threading.current_thread().name != WORKER_THREAD:
            return
        with self.lock:
            self.by_method[method] += n

    def snapshot(self) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter(self.by_method)


def patch_transport(counter: Counter) -> None:
    """Count at web3's HTTP transport (works on any version of the worker)."""
    from web3 import HTTPProvider

    make_request, make_batch = HTTPProvider.make_request, HTTPProvider.make_batch_request

    def counted(self, method, params):
        counter.add(str(method))
        return make_request(self, method, params)

    def counted_batch(self, requests):
        for method, _ in requests:
            counter.add(f"{method} (batched)")
        counter.add("<batch>")
        return make_batch(self, requests)

    HTTPProvider.make_request = counted
    HTTPProvider.make_batch_request = counted_batch


class ProviderCounts:
    """The worker's own transport counts (gpumesh.client.chain.provider.RpcStats) where its Web3
    has them: the only way to count a websocket connection."""

    def __init__(self, stats) -> None:
        self.stats = stats

    def snapshot(self) -> collections.Counter[str]:
        c = collections.Counter(self.stats.by_method())
        c["<batch>"] = self.stats.batches
        return c


def per_minute(counts: collections.Counter, seconds: float) -> float:
    return sum(n for m, n in counts.items() if m != "<batch>") * 60.0 / seconds  # each call of a batch counts


def show(title: str, counts: collections.Counter, seconds: float) -> None:
    print(f"\n{title}: {seconds:.1f}s, {per_minute(counts, seconds):.1f} requests/min")
    for method, n in counts.most_common(12):
        if method == "<batch>" or not n:
            continue
        print(f"  {method:<36} {n:6d}  ({n * 60.0 / seconds:7.1f}/min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    ap.add_argument("--jobs", type=int, default=4, help="jobs posted for the busy measurement")
    ap.add_argument("--automine", action="store_true", help="one block per transaction (default: 1 s blocks)")
    ap.add_argument("--ws", action="store_true", help="the worker connects over ws:// (new heads by subscription)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from gpumesh.client.chain.anvil import start_anvil
    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
    from gpumesh.client.chain.deploy import deploy
    from gpumesh.client.chain.types import JobSpec, JobState
    from gpumesh.client.services.accounts import dev_account
    from gpumesh.ipfs.kubo import KuboStore
    from gpumesh.ipfs.node import EmbeddedNode
    from gpumesh.node.jobs.publish import publish_job
    from gpumesh.node.worker.app import build_worker
    from gpumesh.node.worker.node import WorkerConfig

    counter = Counter()
    patch_transport(counter)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    anvil = start_anvil(block_time=None if args.automine else 1)
    ipfs = EmbeddedNode(tmp / "ipfs")
    ipfs.start()
    try:
        dep = deploy(anvil.url, dev_account(0).key.hex(), unbonding_delay=3600)
        w3 = connect(anvil.url, dep)
        WorkerRegistryClient.with_account(w3, dep.registry, dev_account(2)).stake(10 * ETH)
        store = KuboStore(ipfs.api_multiaddr)
        pub = publish_job(store, ROOT / "examples/digits/mlp", ROOT / "examples/digits/data/test_inputs_mlp.safetensors")
        url = anvil.url.replace("http://", "ws://") if args.ws else anvil.url
        app = build_worker(rpc_url=url, deployment=dep, account=dev_account(2), store=KuboStore(ipfs.api_multiaddr),
                           state_dir=tmp / "worker", config=WorkerConfig())
        try:
            from gpumesh.client.chain.provider import stats_of

            stats = stats_of(app.node.market.w3)
        except ImportError:
            stats = None
        if stats is not None:  # count what the worker's own transport saw (HTTP or websocket)
            counter = ProviderCounts(stats)
        elif args.ws:
            sys.exit("--ws needs the counted transport (gpumesh.client.chain.provider)")
        app.daemon.start()
        time.sleep(3.0)  # start-up (capabilities, the first scan) is not idle time
        before = counter.snapshot()
        t0 = time.monotonic()
        time.sleep(args.idle)
        idle = counter.snapshot() - before
        show(f"idle worker ({'automine' if args.automine else '1 s blocks'}{', ws' if args.ws else ''})",
             idle, time.monotonic() - t0)

        market = JobMarketClient.with_account(w3, dep.market, dev_account(1))
        s = pub.spec
        before = counter.snapshot()
        t0 = time.monotonic()
        ids = []
        for _ in range(args.jobs):
            now = w3.eth.get_block("latest")["timestamp"]
            spec = JobSpec(spec_cid=pub.spec_cid, program_root=s.program_root, inputs_root=s.inputs_root,
                           num_units=s.num_units, required_stake=ETH, claim_deadline=now + 3600, execution_time=3600,
                           challenge_window=600, min_gpu_memory_mib=0, dispute_bond=ETH // 10)
            ids.append(market.post_job(spec, ETH // 10)[0])
        reader = JobMarketClient(w3, dep.market)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if all(reader.get_job(j).state == JobState.SUBMITTED for j in ids):
                break
            time.sleep(0.2)
        else:
            sys.exit("the worker did not submit every job within 10 minutes")
        busy = counter.snapshot() - before
        took = time.monotonic() - t0
        show(f"busy worker ({args.jobs} jobs of {s.num_units} units, posted to submitted)", busy, took)
        print(f"  = {per_minute(busy, took) * took / 60 / args.jobs:.1f} requests per job")
        app.close()
    finally:
        ipfs.stop()
        anvil.stop()


if __name__ == "__main__":
    main()
