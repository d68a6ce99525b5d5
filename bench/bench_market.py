"""The market at scale on a real devnet (issue #15, "Scale benchmark"): worker and watchtower
PROCESSES against anvil with 1-second blocks, shards posted by several posters, every figure read
from the chain, /proc and the wire.

What runs (all started here, all stopped on exit, Ctrl-C or error):
- anvil with `--block-time 1` (not automine) and one funded dev account per role, the contracts
  deployed by client/chain/deploy.py, the embedded IPFS node as its own process (`gpumesh ipfs
  daemon`, so its CPU is measured apart);
- a counting JSON-RPC proxy in front of anvil (in this process): every daemon gets its own URL path
  (http://127.0.0.1:P/w07), so requests are counted per process and by method on the wire, the same
  for any version of the daemons' RPC layer (a batch is one HTTP request carrying several calls);
- N `gpumesh worker run` processes (own account, state folder and /metrics port; each staked 1 ETH)
  and M `gpumesh watchtower run` processes (sample rate 1: every unit of every shard re-executed);
- P posters (threads here, the Python API: publish_sharded + JobMarketClient.post_jobs) posting
  sharded jobs of the digits MLP (examples/digits/mlp, its 17 test units replicated) with a short
  challenge window, so every shard is claimed, executed, submitted, and finalized within the run.

Measured: shards finalized per minute; post -> claim and post -> submit times (block timestamps of
JobsPosted / JobClaimed / ResultSubmitted), median and p95; every transaction of the run from its
receipt (gas by function, reverted transactions from worker accounts = gas wasted on lost claim
races); RPC requests per worker per minute, idle (before the first post) and busy (first post to
the last finalize); CPU seconds per shard from /proc/<pid>/stat of every process, the model's own
execution subtracted (the same shards executed alone in this process, times the executions the
daemons did); and what limited the run. From these: the shards/s one 2-core machine's workers
carry, against the bound of a 12-second-block, 30M-gas chain at the measured gas per shard (post
share + claim + submit + finalize).

Usage: .venv/bin/python bench/bench_market.py [--quick] [--json FILE] [--keep]
       (full: 16 workers, 2 watchtowers, 4 posters, 200 shards; --quick: 4, 1, 2, 24)
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ETH = 10**18
MLP = ROOT / "examples/digits/mlp"
INPUTS = ROOT / "examples/digits/data/test_inputs_mlp.safetensors"
#: The public chain the node side is compared with.
CHAIN_BLOCK_GAS = 30_000_000
CHAIN_BLOCK_SECONDS = 12
MACHINE_CORES = 2
#: Market functions whose gas makes up a shard's cost on chain (postJobs is shared by its shards).
SHARD_STEPS = ("claimJob", "submitResult", "finalizeJob")


# ---------------------------------------------------------------- pure arithmetic (unit-tested)
def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default);
    None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def gas_per_shard(post_gas: int, shards_posted: int, step_gas: dict[str, float]) -> float:
    """A shard's gas on chain: its share of the postJobs transactions plus one of each SHARD_STEPS."""
    if shards_posted <= 0:
        raise ValueError("no shards posted")
    missing = [s for s in SHARD_STEPS if s not in step_gas]
    if missing:
        raise ValueError(f"no gas measured for {', '.join(missing)}")
    return post_gas / shards_posted + sum(step_gas[s] for s in SHARD_STEPS)


def chain_bound(gas_per_shard_: float, block_gas: int = CHAIN_BLOCK_GAS,
                block_seconds: float = CHAIN_BLOCK_SECONDS) -> float:
    """Shards per second a chain settles when every block is full of shard transactions."""
    if gas_per_shard_ <= 0:
        raise ValueError("gas per shard must be positive")
    return block_gas / block_seconds / gas_per_shard_


def machine_capacity(cpu_per_shard: float, cores: int = MACHINE_CORES, idle_cpu_per_s: float = 0.0) -> float:
    """Shards per second `cores` carry: the CPU left after the idle cost, over the CPU one shard takes."""
    if cpu_per_shard <= 0:
        return math.inf
    return max(0.0, cores - idle_cpu_per_s) / cpu_per_shard


# ---------------------------------------------------------------- counting JSON-RPC proxy
class CountingProxy:
    """An HTTP JSON-RPC pass-through to one upstream node that counts, per URL path (one per
    process), the HTTP requests and the JSON-RPC calls by method."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self._up = (u.hostname or "127.0.0.1", u.port or 80)
        self._lock = threading.Lock()
        self._http: collections.Counter[str] = collections.Counter()
        self._calls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._count(self.path.strip("/") or "-", body)
                status, data = proxy._forward(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-proxy", daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def _count(self, name: str, body: bytes) -> None:
        try:
            msg = json.loads(body)
            methods = [str(m.get("method")) for m in msg] if isinstance(msg, list) else [str(msg.get("method"))]
        except (ValueError, AttributeError):
            methods = ["<unparsed>"]
        with self._lock:
            self._http[name] += 1
            self._calls[name].update(methods)

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        for _ in range(2):  # a kept-alive upstream connection may have been closed: reconnect once
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(*self._up, timeout=120)
            try:
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
        return 502, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"proxy: upstream unreachable"}}'

    def snapshot(self) -> dict[str, tuple[int, collections.Counter[str]]]:
        """name -> (HTTP requests, calls by method)."""
        with self._lock:
            return {n: (self._http[n], collections.Counter(self._calls[n])) for n in self._http}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------- processes and /proc
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and its waited-for children (/proc/<pid>/stat), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat), all cores."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals) - idle) / CLK_TCK, sum(vals) / CLK_TCK


class Procs:
    """The daemons this bench starts, each in its own session (so its whole group can be stopped)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen, Path]] = []
        self.last_cpu: dict[str, float] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                 env=env, start_new_session=True, cwd=ROOT)
        self.items.append((name, p, log))
        return p

    def cpu(self) -> dict[str, float]:
        for name, p, _ in self.items:
            c = cpu_seconds(p.pid)
            if c is not None and p.poll() is None:
                self.last_cpu[name] = c
        return dict(self.last_cpu)

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.returncode}; {log})" for n, p, log in self.items if p.poll() is not None]

    def stop_all(self, grace: float = 15.0) -> None:
        live = [(n, p) for n, p, _ in self.items if p.poll() is None]
        for _, p in live:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for _, p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)


def code_version() -> str:
    """The commit measured, and how many files of the daemons' code (client/, node/, ipfs/) differ
    from it in the working tree."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "client", "node", "ipfs"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (f", {len(dirty)} changed file(s) in client/ node/ ipfs/" if dirty else "")


def wait_for(what: str, check, timeout: float, procs: Procs | None = None, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if procs is not None and procs.dead():
            raise RuntimeError(f"while waiting for {what}: process(es) exited: {'; '.join(procs.dead())}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


def metrics(port: int) -> dict[str, float]:
    """A Prometheus /metrics page as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
    return out


def log_count(path: Path, needle: str) -> int:
    try:
        return sum(needle in line for line in path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


# ---------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 workers, 1 watchtower, 2 posters, 24 shards")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--watchtowers", type=int)
    ap.add_argument("--posters", type=int)
    ap.add_argument("--shards", type=int, help="shards posted in total")
    ap.add_argument("--shards-per-job", type=int, default=10, help="shards in one postJobs (one sharded job)")
    ap.add_argument("--units-per-shard", type=int, default=2)
    ap.add_argument("--challenge-window", type=int, default=5, help="seconds (the chain takes any window > 0)")
    ap.add_argument("--post-every", type=float, default=2.0, help="seconds between one poster's jobs")
    ap.add_argument("--idle", type=float, help="seconds of idle measurement before the first post")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed from the first post")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs, state) after a success")
    ap.add_argument("--profile-worker", action="store_true", help="run the first worker under cProfile and print "
                    "where its CPU went, by package (its own CPU figures then carry the profiler's overhead)")
    args = ap.parse_args(argv)
    full = dict(workers=16, watchtowers=2, posters=4, shards=200, idle=20.0)
    quick = dict(workers=4, watchtowers=1, posters=2, shards=24, idle=8.0)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick and args.shards_per_job == 10:
        args.shards_per_job = 6
    jobs = args.shards // args.shards_per_job
    if jobs * args.shards_per_job != args.shards or jobs % args.posters:
        ap.error(f"--shards {args.shards} must be a multiple of --shards-per-job x --posters "
                 f"({args.shards_per_job} x {args.posters})")


    def interrupted(signum, frame):  # SIGTERM cleans up like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="bench-market-"))
    ctx = Ctx()
    try:
        report = run(args, tmp, ctx)
    except KeyboardInterrupt:
        print(f"\ninterrupted: stopping every process started (logs in {tmp})", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, the logs kept for the details
        print(f"bench_market: {type(exc).__name__}: {exc} (logs in {tmp})", file=sys.stderr)
        return 1
    finally:
        ctx.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"figures written to {args.json}")
    if args.keep:
        print(f"run folder kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


class Ctx:
    """What the run started, so that every exit path stops it: daemons, the proxy, anvil."""

    def __init__(self) -> None:
        self.procs = Procs()
        self.anvil = None
        self.proxy: CountingProxy | None = None

    def close(self) -> None:
        self.procs.stop_all()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None


EVENTS = {"JobsPosted": "JobsPosted(uint256,uint256,address,uint256)",
          "JobClaimed": "JobClaimed(uint256,address,uint64)",
          "ResultSubmitted": "ResultSubmitted(uint256,address,bytes32,string,uint64)",
          "JobFinalized": "JobFinalized(uint256,address,uint256)",
          "JobReopened": "JobReopened(uint256,address,uint256,uint64)",
          "ChallengeOpened": "ChallengeOpened(uint256,uint32)"}


def _topics() -> dict[str, str]:
    from eth_utils import keccak

    return {"0x" + keccak(text=sig).hex(): name for name, sig in EVENTS.items()}


def _selectors() -> dict[str, str]:
    from eth_utils import function_abi_to_4byte_selector

    from gpumesh.client.chain.abi_store import load_abi

    out = {}
    for contract in ("JobMarket", "WorkerRegistry", "DisputeGame"):
        for item in load_abi(contract):
            if item.get("type") == "function":
                out["0x" + function_abi_to_4byte_selector(item).hex()] = item["name"]
    return out


def _snapshot(ctx: Ctx) -> dict:
    cpu = ctx.procs.cpu()
    cpu["anvil"] = cpu_seconds(ctx.anvil.pid) or 0.0
    cpu["bench"] = cpu_seconds(os.getpid()) or 0.0
    return {"t": time.monotonic(), "cpu": cpu, "rpc": ctx.proxy.snapshot(), "machine": machine_busy(),
            "block": int(ctx.anvil.rpc("eth_blockNumber"), 16)}


def _delta_cpu(a: dict, b: dict, prefix: str) -> float:
    return sum(b["cpu"].get(k, 0.0) - a["cpu"].get(k, 0.0) for k in b["cpu"] if k.startswith(prefix))


def _delta_rpc(a: dict, b: dict, prefix: str) -> tuple[int, collections.Counter]:
    http, calls = 0, collections.Counter()
    for name, (n, c) in b["rpc"].items():
        if name.startswith(prefix):
            n0, c0 = a["rpc"].get(name, (0, collections.Counter()))
            http += n - n0
            calls.update(c - c0)
    return http, calls


def run(args, tmp: Path, ctx: Ctx) -> dict:  # noqa: C901, PLR0912, PLR0915 - one linear script, step by step
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from gpumesh.client.chain.anvil import free_port, start_anvil
    from gpumesh.client.chain.contracts import JobMarketClient, WorkerRegistryClient, connect
    from gpumesh.client.chain.deploy import deploy
    from gpumesh.client.chain.types import JobSpec
    from gpumesh.client.services.accounts import dev_account
    from gpumesh.client.services.devnet import ipfs_reachable
    from gpumesh.ipfs.kubo import KuboStore
    from gpumesh.node.jobs.publish import publish_sharded
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, load_units, save_units

    py, cli = sys.executable, ["-m", "gpumesh.client.cli.main"]
    n_acc = 1 + args.posters + args.workers + args.watchtowers
    poster_idx = list(range(1, 1 + args.posters))
    worker_idx = list(range(1 + args.posters, 1 + args.posters + args.workers))
    tower_idx = list(range(1 + args.posters + args.workers, n_acc))
    ups, spj = args.units_per_shard, args.shards_per_job
    jobs = args.shards // spj
    code = code_version()
    print(f"bench_market ({code}): {args.workers} worker processes, {args.watchtowers} watchtower process(es), "
          f"{args.posters} posters, {args.shards} shards of {ups} units ({spj} per postJobs), challenge window "
          f"{args.challenge_window}s, anvil with 1 s blocks; on {os.cpu_count()} CPU(s)", flush=True)

    # ---- chain, IPFS, deployment, proxy
    t_setup = time.monotonic()
    ctx.anvil = anvil = start_anvil(block_time=1, accounts=n_acc)
    home = tmp / "home"
    home.mkdir()
    (home / "config.toml").write_text(f"[devnet]\naccounts = {n_acc}\n")
    ipfs_api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMESH_")}
    env.update(GPUMESH_HOME=str(home), GPUMESH_NETWORK="devnet", GPUMESH_IPFS_API=ipfs_api, PYTHONUNBUFFERED="1")
    ctx.procs.spawn("ipfs", [py, *cli, "ipfs", "daemon", "--api", ipfs_api, "--repo", str(tmp / "ipfs")], env,
                    tmp / "ipfs.log")
    wait_for("the IPFS node", lambda: ipfs_reachable(ipfs_api, 1.0), 60, ctx.procs)
    dep = deploy(anvil.url, "0x" + dev_account(0).key.hex().removeprefix("0x"), unbonding_delay=3600)
    dep_file = tmp / "deployment.json"
    dep_file.write_text(dep.to_json())
    env["GPUMESH_DEPLOYMENT"] = str(dep_file)
    ctx.proxy = proxy = CountingProxy(anvil.url)

    def stake(i: int) -> None:
        WorkerRegistryClient.with_account(connect(anvil.url, dep), dep.registry, dev_account(i)).stake(ETH)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(stake, worker_idx))

    # ---- the shards' data, uploaded before anything is measured
    store = KuboStore(ipfs_api)
    bundle = load_program(MLP)
    base = load_units(INPUTS, bundle.program)
    data_dir = tmp / "inputs"
    data_dir.mkdir()
    published: list[list] = []  # per job: the PublishedJob of each shard
    shard_units: list[np.ndarray] = []
    for k in range(jobs):
        arr = base[(np.arange(spj * ups) + k * spj * ups) % len(base)]
        f = data_dir / f"job{k}.safetensors"
        save_units(f, arr)
        published.append(publish_sharded(store, MLP, f, [ups] * spj, meta={"bench_job": k}))
        shard_units += [arr[i * ups:(i + 1) * ups] for i in range(spj)]
    store.close()
    print(f"setup: anvil, IPFS, deployment, {args.workers} stakes, {args.shards} shards uploaded in "
          f"{time.monotonic() - t_setup:.0f}s", flush=True)

    # ---- the daemons
    t_daemons = time.monotonic()
    wports, tports = {}, {}
    for n, i in enumerate(worker_idx):
        name = f"w{n:02d}"
        wports[name] = free_port()
        prof = ["-c", PROFILE_CPU, str(tmp / "w00.prof")] if args.profile_worker and n == 0 else cli
        ctx.procs.spawn(name, [py, *prof, "worker", "run", "--account", f"dev{i}", "--state", str(tmp / name),
                               "--metrics-port", str(wports[name]), "--rpc-url", proxy.url(name)],
                        env, tmp / f"{name}.log")
    for n, i in enumerate(tower_idx):
        name = f"t{n}"
        tports[name] = free_port()
        ctx.procs.spawn(name, [py, *cli, "watchtower", "run", "--account", f"dev{i}", "--state", str(tmp / name),
                               "--metrics-port", str(tports[name]), "--rpc-url", proxy.url(name)],
                        env, tmp / f"{name}.log")

    def ready() -> bool:
        return (all(log_count(tmp / f"{n}.log", "started on") for n in wports)
                and all(log_count(tmp / f"{n}.log", " on chain ") for n in tports))

    wait_for("the daemons' start-up", ready, 600, ctx.procs, poll=1.0)
    time.sleep(3.0)  # their first full ticks are start-up, not idle time
    print(f"daemons up in {time.monotonic() - t_daemons:.0f}s; measuring {args.idle:.0f}s idle", flush=True)

    # ---- idle, then busy
    snap_a = _snapshot(ctx)
    time.sleep(args.idle)
    snap_b = _snapshot(ctx)

    market_addr = dep.market
    errors: list[BaseException] = []
    posts: list[tuple[int, list[int], int]] = []
    t0 = time.monotonic()

    def poster(p: int) -> None:
        try:
            w3 = connect(proxy.url(f"p{p}"), dep)
            market = JobMarketClient.with_account(w3, dep.market, dev_account(poster_idx[p]))
            for j, k in enumerate(range(p, jobs, args.posters)):
                delay = t0 + (j + p / args.posters) * args.post_every - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = int(w3.eth.get_block("latest")["timestamp"])
                specs = [JobSpec(spec_cid=pub.spec_cid, program_root=pub.spec.program_root,
                                 inputs_root=pub.spec.inputs_root, num_units=pub.spec.num_units,
                                 required_stake=ETH // 100, claim_deadline=now + 3600, execution_time=600,
                                 challenge_window=args.challenge_window, min_gpu_memory_mib=0,
                                 dispute_bond=ETH // 50) for pub in published[k]]
                ids, res = market.post_jobs(specs, [ETH // 1000] * len(specs))
                posts.append((k, [int(x) for x in ids], res.block_number))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=poster, args=(p,), name=f"poster{p}", daemon=True) for p in range(args.posters)]
    for t in threads:
        t.start()
    topics = _topics()
    by_name = {v: k for k, v in topics.items()}

    def count(event: str) -> int:
        logs = anvil.rpc("eth_getLogs", [{"address": market_addr, "topics": [by_name[event]],
                                          "fromBlock": hex(snap_b["block"])}])
        return len(logs)

    next_line = time.monotonic() + 10
    while True:
        if errors:
            raise RuntimeError(f"a poster failed: {type(errors[0]).__name__}: {errors[0]}")
        if ctx.procs.dead():
            raise RuntimeError(f"process(es) exited: {'; '.join(ctx.procs.dead())}")
        finalized = count("JobFinalized")
        if finalized >= args.shards:
            break
        if time.monotonic() - t0 > args.timeout:
            raise RuntimeError(f"{finalized} of {args.shards} shards finalized within {args.timeout:.0f}s")
        if time.monotonic() > next_line:
            next_line += 10
            print(f"  {time.monotonic() - t0:5.0f}s: posted {sum(len(ids) for _, ids, _ in posts)}, claimed "
                  f"{count('JobClaimed')}, submitted {count('ResultSubmitted')}, finalized {finalized}", flush=True)
        time.sleep(1.0)
    t_final = time.monotonic()
    # the workers withdraw after finalizing: wait until their nonces stand still for 3 blocks
    addrs = [dev_account(i).address for i in worker_idx]
    last, still = None, 0
    while still < 3 and time.monotonic() - t_final < 30:
        nonces = [int(anvil.rpc("eth_getTransactionCount", [a, "pending"]), 16) for a in addrs]
        still = still + 1 if nonces == last else 0
        last = nonces
        time.sleep(1.0)
    snap_c = _snapshot(ctx)
    print(f"all {args.shards} shards finalized {t_final - t0:.0f}s after the first post", flush=True)

    wmet = {n: metrics(p) for n, p in wports.items()}
    tmet = {n: metrics(p) for n, p in tports.items()}
    logs = {n: tmp / f"{n}.log" for n in list(wports) + list(tports)}
    log_figures = {needle: sum(log_count(logs[n], needle) for n in wports) for needle in
                   ("lost the claim race", "another worker claimed it first", "tick failed", " WARNING ", " ERROR ",
                    "measured ")}
    tower_warnings = sum(log_count(logs[n], " WARNING ") + log_count(logs[n], " ERROR ") for n in tports)
    ctx.procs.stop_all()  # the daemons are done; what follows reads the chain and measures alone

    profile = cpu_by_function(tmp / "w00.prof") if args.profile_worker else None

    # ---- every transaction and event of the busy window, from blocks and receipts
    selectors = _selectors()
    worker_set = {a.lower() for a in addrs}
    head = int(anvil.rpc("eth_blockNumber"), 16)
    txs, events, blocks = [], [], []
    for n in range(snap_b["block"] + 1, head + 1):
        blk = anvil.rpc("eth_getBlockByNumber", [hex(n), True])
        rcs = anvil.rpc("eth_getBlockReceipts", [hex(n)])
        ts = int(blk["timestamp"], 16)
        blocks.append((n, ts, int(blk["gasUsed"], 16), int(blk["gasLimit"], 16)))
        for tx, rc in zip(blk["transactions"], rcs, strict=True):
            txs.append({"from": tx["from"].lower(), "fn": selectors.get(tx["input"][:10], tx["input"][:10]),
                        "ok": int(rc["status"], 16) == 1, "gas": int(rc["gasUsed"], 16), "ts": ts})
            for lg in rc["logs"]:
                name = topics.get(lg["topics"][0]) if lg["topics"] else None
                if name is not None and lg["address"].lower() == market_addr.lower():
                    events.append((name, int(lg["topics"][1], 16), ts, lg["data"]))

    # ---- the model's own execution, alone in this process (the daemons are stopped)
    ex_t = time.process_time()
    ex = Executor(bundle, "cpu")
    build_cpu = time.process_time() - ex_t
    sample = shard_units[:: max(1, len(shard_units) // 20)]
    for u in sample[:3]:
        ex.run_units(u)  # warm-up
    per = []
    for u in sample:  # the least of 10 runs per shard: torch's threads spin (CPU) while others hold the cores
        runs = []
        for _ in range(10):
            c0 = time.process_time()
            ex.run_units(u)
            runs.append(time.process_time() - c0)
        per.append(min(runs))
    exec_cpu = statistics.median(per)

    return report_of(args, locals())


#: `python -c PROFILE_CPU OUT ARGS...`: the CLI with ARGS under cProfile timed by the process's CPU
#: clock (the default wall clock would put the time spent waiting on sockets first), stats to OUT.
PROFILE_CPU = """
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["gpumesh", *sys.argv[2:]]
prof = cProfile.Profile(time.process_time)
try:
    prof.runcall(runpy.run_module, "gpumesh.client.cli.main", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    prof.dump_stats(out)
"""


def cpu_by_function(path: Path, top: int = 40) -> dict:
    """Where a cProfile file's CPU went: its total, and the project's own functions (client/, node/,
    ipfs/; module bodies left out) by cumulative time, largest first."""
    import pstats

    stats = pstats.Stats(str(path)).stats
    total = sum(tt for _, _, tt, _, _ in stats.values())
    funcs: collections.Counter[str] = collections.Counter()
    for (filename, _, func), (_, _, _, cumtime, _) in stats.items():
        if func == "<module>" or not filename.startswith(str(ROOT)):
            continue
        rel = Path(filename).relative_to(ROOT)
        if rel.parts[0] in ("client", "node", "ipfs"):
            funcs[f"{'.'.join(rel.with_suffix('').parts[1:])}.{func}"] += cumtime
    return {"total_s": total, "cumulative_s": dict(funcs.most_common(top))}


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def report_of(args, v: dict) -> dict:  # noqa: C901, PLR0915 - the figures, then the table
    snap_a, snap_b, snap_c = v["snap_a"], v["snap_b"], v["snap_c"]
    events, txs, blocks = v["events"], v["txs"], v["blocks"]
    W, T = args.workers, args.watchtowers  # noqa: N806 - the bench's own symbols
    ups = args.units_per_shard

    # timing per shard from block timestamps
    post_ts, first = {}, {"JobClaimed": {}, "ResultSubmitted": {}, "JobFinalized": {}}
    for name, jid, ts, data in events:
        if name == "JobsPosted":
            cnt = int(data[2:66], 16)
            for j in range(jid, jid + cnt):
                post_ts[j] = ts
        elif name in first:
            first[name].setdefault(jid, ts)
    claim = [first["JobClaimed"][j] - post_ts[j] for j in post_ts if j in first["JobClaimed"]]
    submit = [first["ResultSubmitted"][j] - post_ts[j] for j in post_ts if j in first["ResultSubmitted"]]
    held = [first["ResultSubmitted"][j] - first["JobClaimed"][j] for j in post_ts
            if j in first["ResultSubmitted"] and j in first["JobClaimed"]]
    fin = first["JobFinalized"]
    to_final = [fin[j] - first["ResultSubmitted"][j] for j in post_ts if j in fin and j in first["ResultSubmitted"]]
    settled = sum(1 for j in post_ts if j in fin)
    t_first_post = min(post_ts.values())
    t_last_fin = max(fin[j] for j in post_ts if j in fin)
    t_last_submit = max(first["ResultSubmitted"][j] for j in post_ts if j in first["ResultSubmitted"])
    settle_per_min = settled * 60.0 / max(1, t_last_fin - t_first_post)
    submit_per_min = len(submit) * 60.0 / max(1, t_last_submit - t_first_post)
    reopened = sum(1 for e in events if e[0] == "JobReopened")
    challenges = sum(1 for e in events if e[0] == "ChallengeOpened")

    # gas from receipts
    worker_set = v["worker_set"]
    by_fn: dict[str, dict] = collections.defaultdict(lambda: {"ok": [], "reverted": []})
    wasted, wasted_by_fn = 0, collections.Counter()
    for t in txs:
        by_fn[t["fn"]]["ok" if t["ok"] else "reverted"].append(t["gas"])
        if not t["ok"] and t["from"] in worker_set:
            wasted += t["gas"]
            wasted_by_fn[t["fn"]] += 1
    shards_posted = sum(len(ids) for _, ids, _ in v["posts"])
    post_gas = sum(by_fn["postJobs"]["ok"])
    step = {fn: statistics.median(by_fn[fn]["ok"]) for fn in (*SHARD_STEPS, "withdraw") if by_fn[fn]["ok"]}
    gps = gas_per_shard(post_gas, shards_posted, step)
    bound = chain_bound(gps)
    bound_w = chain_bound(gps + step.get("withdraw", 0))
    wasted_per_shard = wasted / max(1, settled)
    bound_races = chain_bound(gps + step.get("withdraw", 0) + wasted_per_shard)  # what blocks really carried
    busy_blocks = [b for b in blocks if t_first_post <= b[1] <= t_last_fin]
    block_fill = [g / lim for _, _, g, lim in busy_blocks]

    # RPC on the wire
    idle_s = snap_b["t"] - snap_a["t"]
    busy_s = snap_c["t"] - snap_b["t"]
    w_idle_http, _ = _delta_rpc(snap_a, snap_b, "w")
    w_busy_http, w_busy_calls = _delta_rpc(snap_b, snap_c, "w")
    t_idle_http, _ = _delta_rpc(snap_a, snap_b, "t")
    t_busy_http, _ = _delta_rpc(snap_b, snap_c, "t")
    rpc = {"worker_idle_per_min": w_idle_http * 60 / idle_s / W, "worker_busy_per_min": w_busy_http * 60 / busy_s / W,
           "worker_calls_busy_per_min": sum(w_busy_calls.values()) * 60 / busy_s / W,
           "worker_requests_per_shard": w_busy_http / max(1, settled),
           "watchtower_idle_per_min": t_idle_http * 60 / idle_s / max(1, T),
           "watchtower_busy_per_min": t_busy_http * 60 / busy_s / max(1, T),
           "worker_busy_methods_per_min": {m: n * 60 / busy_s / W for m, n in w_busy_calls.most_common(10)}}

    # CPU from /proc, the model's execution subtracted
    wm, tm = v["wmet"], v["tmet"]
    units_exec = sum(m.get('gpumesh_worker_events_total{event="units_executed"}', 0) for m in wm.values())
    units_checked = sum(m.get("gpumesh_watchtower_units_checked_total", 0) for m in tm.values())
    estimates = v["log_figures"]["measured "]  # one timed pass of the program per worker process
    exec_cpu = v["exec_cpu"]
    w_exec = (units_exec / ups + estimates) * exec_cpu
    t_exec = units_checked / ups * exec_cpu
    w_idle_cpu = _delta_cpu(snap_a, snap_b, "w")
    w_busy_cpu = _delta_cpu(snap_b, snap_c, "w")
    t_busy_cpu = _delta_cpu(snap_b, snap_c, "t")
    idle_rate = w_idle_cpu / idle_s / W  # CPU seconds per second of one idle worker
    per_shard_all = (w_busy_cpu - w_exec) / settled
    per_shard_marginal = (w_busy_cpu - idle_rate * W * busy_s - w_exec) / settled
    cap_all = machine_capacity(per_shard_all)
    cap = machine_capacity(per_shard_marginal, idle_cpu_per_s=idle_rate)
    others = {k: _delta_cpu(snap_b, snap_c, k) for k in ("anvil", "ipfs", "bench")}
    ours = w_busy_cpu + t_busy_cpu + sum(others.values())
    cores = os.cpu_count() or 1
    (mb0, mt0), (mb1, mt1) = snap_b["machine"], snap_c["machine"]
    cpu = {"worker_idle_cpu_per_s": idle_rate, "worker_busy_cpu_s": w_busy_cpu, "worker_exec_cpu_s": w_exec,
           "exec_cpu_per_shard": exec_cpu, "executor_build_cpu": v["build_cpu"],
           "worker_node_cpu_per_shard": per_shard_all, "worker_node_cpu_per_shard_marginal": per_shard_marginal,
           "watchtower_busy_cpu_s": t_busy_cpu, "watchtower_exec_cpu_s": t_exec,
           "watchtower_node_cpu_per_shard_each": (t_busy_cpu - t_exec) / settled / max(1, T),
           "anvil_cpu_per_shard": others["anvil"] / settled, "ipfs_cpu_per_shard": others["ipfs"] / settled,
           "bench_cpu_per_shard": others["bench"] / settled,
           "ours_share_of_cores": ours / busy_s / cores, "machine_busy_share": (mb1 - mb0) / max(1e-9, mt1 - mt0)}

    # claims in each block: won and lost (reverted) by the workers, and the shards open meanwhile
    per_block: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for t in txs:
        if t["fn"] == "claimJob" and t["from"] in worker_set:
            per_block[t["ts"]][0 if t["ok"] else 1] += 1
    won = [w for w, _ in per_block.values() if w]
    lost_claims = sum(r for _, r in per_block.values())
    open_at = [sum(1 for j in post_ts if post_ts[j] <= ts and first["JobClaimed"].get(j, math.inf) > ts)
               for ts in sorted(per_block)]
    claims = {"blocks_with_claims": len(per_block), "won_per_block_mean": statistics.fmean(won) if won else 0.0,
              "won_per_block_max": max(won or [0]), "reverted_per_won": lost_claims / max(1, sum(won)),
              "open_shards_max": max(open_at or [0]),
              "open_shards_median": statistics.median(open_at) if open_at else 0}

    # what limited this run
    duty = sum(held) / (W * max(1, t_last_submit - t_first_post))
    limits = []
    if claims["reverted_per_won"] >= 1:
        limits.append(f"claim races: the workers claim the same open shard in the same block, "
                      f"{claims['reverted_per_won']:.1f} reverted claims per won claim, "
                      f"{claims['won_per_block_mean']:.2f} claims won per block (max {claims['won_per_block_max']}) "
                      f"while {claims['open_shards_median']:.0f} shards were open (median; max "
                      f"{claims['open_shards_max']})")
    if cpu["machine_busy_share"] > 0.9:
        whose = ("mostly other load on this shared machine" if cpu["ours_share_of_cores"] < 0.5
                 else "mostly this run's processes")
        limits.append(f"CPU: the machine's {cores} cores were {cpu['machine_busy_share']:.0%} busy, {whose} "
                      f"(this run's processes {cpu['ours_share_of_cores']:.0%} of them)")
    if duty > 0.6:
        limits.append(f"workers: each holds one claimed shard at a time (--max-active 1) and held one "
                      f"{duty:.0%} of the time; claim -> submit takes {statistics.median(held):.0f}s median "
                      f"({statistics.median(held):.0f} blocks)")
    if block_fill and max(block_fill) > 0.8:
        limits.append(f"block gas: fullest block {max(block_fill):.0%} of its limit")
    if not limits:
        limits.append(f"none saturated (machine {cpu['machine_busy_share']:.0%} busy, worker duty {duty:.0%}, "
                      f"fullest block {max(block_fill or [0]):.0%}): posting rate and block/challenge times")

    verdict = cap >= bound
    rep = {
        "config": {k: getattr(args, k) for k in ("workers", "watchtowers", "posters", "shards", "shards_per_job",
                                                 "units_per_shard", "challenge_window", "post_every", "idle")},
        "cores": cores,
        "code": v["code"],
        "shards": {"posted": shards_posted, "settled": settled, "reopened": reopened, "challenges": challenges,
                   "settled_per_min": settle_per_min, "submitted_per_min": submit_per_min,
                   "first_post_to_last_finalize_s": t_last_fin - t_first_post},
        "latency_s": {"post_to_claim_median": percentile(claim, 50), "post_to_claim_p95": percentile(claim, 95),
                      "post_to_submit_median": percentile(submit, 50), "post_to_submit_p95": percentile(submit, 95),
                      "claim_to_submit_median": percentile(held, 50),
                      "submit_to_finalize_median": percentile(to_final, 50),
                      "submit_to_finalize_p95": percentile(to_final, 95)},
        "claims": claims,
        "gas": {"post_per_shard": post_gas / shards_posted, **{f"{k}_median": g for k, g in step.items()},
                "per_shard": gps, "wasted_by_worker_reverts": wasted, "worker_reverts_by_fn": dict(wasted_by_fn),
                "wasted_per_shard": wasted_per_shard,
                "reverted_all": {fn: len(d["reverted"]) for fn, d in by_fn.items() if d["reverted"]},
                "fullest_block_share": max(block_fill or [0]), "mean_block_share": statistics.fmean(block_fill or [0])},
        "rpc": rpc, "cpu": cpu,
        "worker_logs": {k.strip(): n for k, n in v["log_figures"].items() if k != "measured "},
        "watchtower_log_warnings": v["tower_warnings"],
        "limiting": limits,
        "worker_profile_s": v["profile"],
        "capacity": {"chain_bound_shards_per_s": bound, "chain_bound_with_withdraw": bound_w,
                     "chain_bound_with_withdraw_and_races": bound_races,
                     "machine_shards_per_s": cap, "machine_shards_per_s_all_measured": cap_all,
                     "carries_chain_bound": verdict},
    }
    _print(rep)
    return rep


def _print(r: dict) -> None:
    s, lat, g, rpc, c, cap = r["shards"], r["latency_s"], r["gas"], r["rpc"], r["cpu"], r["capacity"]
    cf = r["config"]
    rows = [
        ("shards settled (finalized)", f"{s['settled']}/{s['posted']} in {s['first_post_to_last_finalize_s']}s "
         f"({s['reopened']} re-opened, {s['challenges']} challenged)"),
        ("shards settled per minute", f"{s['settled_per_min']:.1f} (submitted: {s['submitted_per_min']:.1f}/min)"),
        ("post -> claim, median / p95", f"{_fmt(lat['post_to_claim_median'])} / {_fmt(lat['post_to_claim_p95'])} s"),
        ("post -> submit, median / p95", f"{_fmt(lat['post_to_submit_median'])} / {_fmt(lat['post_to_submit_p95'])} s"
         f" (claim -> submit median {_fmt(lat['claim_to_submit_median'])} s)"),
        ("submit -> finalize, median / p95", f"{_fmt(lat['submit_to_finalize_median'])} / "
         f"{_fmt(lat['submit_to_finalize_p95'])} s (challenge window {cf['challenge_window']} s)"),
        ("claims won per block (mesh)", f"{r['claims']['won_per_block_mean']:.2f} mean, "
         f"{r['claims']['won_per_block_max']} max; {r['claims']['reverted_per_won']:.1f} reverted claims per won "
         f"claim; open shards median {r['claims']['open_shards_median']:.0f}, max {r['claims']['open_shards_max']}"),
        ("gas per shard", f"{g['per_shard']:,.0f} = post share {g['post_per_shard']:,.0f} + claim "
         f"{g.get('claimJob_median', 0):,.0f} + submit {g.get('submitResult_median', 0):,.0f} + finalize "
         f"{g.get('finalizeJob_median', 0):,.0f} (+ withdraw {g.get('withdraw_median', 0):,.0f})"),
        ("wasted gas (worker reverts)", f"{g['wasted_by_worker_reverts']:,} gas in "
         f"{sum(g['worker_reverts_by_fn'].values())} tx {g['worker_reverts_by_fn'] or ''} "
         f"({g['wasted_per_shard']:,.0f} per shard settled)"),
        ("RPC requests / worker / min", f"idle {rpc['worker_idle_per_min']:.1f}, busy {rpc['worker_busy_per_min']:.1f}"
         f" ({rpc['worker_requests_per_shard']:.1f} per shard settled, all workers)"),
        ("RPC requests / watchtower / min", f"idle {rpc['watchtower_idle_per_min']:.1f}, "
         f"busy {rpc['watchtower_busy_per_min']:.1f}"),
        ("model execution CPU / shard", f"{c['exec_cpu_per_shard'] * 1000:.2f} ms ({cf['units_per_shard']} units, "
         f"measured alone)"),
        ("worker CPU / shard (node side)", f"{c['worker_node_cpu_per_shard']:.3f} s all measured; "
         f"{c['worker_node_cpu_per_shard_marginal']:.3f} s over idle polling"),
        ("idle worker CPU", f"{c['worker_idle_cpu_per_s'] * 1000:.1f} ms per second"),
        ("watchtower CPU / shard (node side)", f"{c['watchtower_node_cpu_per_shard_each']:.3f} s each"),
        ("anvil / IPFS / bench CPU / shard", f"{c['anvil_cpu_per_shard']:.3f} / {c['ipfs_cpu_per_shard']:.3f} / "
         f"{c['bench_cpu_per_shard']:.3f} s"),
        ("CPU busy while busy", f"machine {c['machine_busy_share']:.0%}, this run's processes "
         f"{c['ours_share_of_cores']:.0%} of {r['cores']} cores"),
        ("limiting resource", "; ".join(r["limiting"])),
        ("chain bound (12 s, 30M gas)", f"{cap['chain_bound_shards_per_s']:.2f} shards/s "
         f"({cap['chain_bound_with_withdraw']:.2f} with the worker's withdraw per shard, "
         f"{cap['chain_bound_with_withdraw_and_races']:.2f} with it and the lost races' gas)"),
        ("2-core machine's workers", f"{cap['machine_shards_per_s']:.2f} shards/s over idle polling "
         f"({cap['machine_shards_per_s_all_measured']:.2f} counting all {cf['workers']} workers' polling)"),
        ("machine carries the chain bound", f"{'YES' if cap['carries_chain_bound'] else 'NO'} "
         f"({cap['machine_shards_per_s'] / cap['chain_bound_shards_per_s']:.2f}x)"),
    ]
    width = max(len(a) for a, _ in rows)
    print()
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    methods = ", ".join(f"{m} {n:.1f}" for m, n in rpc["worker_busy_methods_per_min"].items())
    print(f"\nbusy worker calls per minute by method: {methods}")
    print(f"worker log lines: {r['worker_logs']}; watchtower warnings/errors: {r['watchtower_log_warnings']}")
    if r["worker_profile_s"]:
        prof = r["worker_profile_s"]
        print(f"\nworker w00 under cProfile (CPU clock): {prof['total_s']:.1f} s in all, start-up included; "
              "cumulative CPU of the project's functions:")
        for name, t in list(prof["cumulative_s"].items())[:28]:
            print(f"  {name:<52} {t:7.2f} s  {t / prof['total_s']:5.0%}")


if __name__ == "__main__":
    sys.exit(main())
