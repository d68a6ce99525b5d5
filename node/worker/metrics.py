"""Optional Prometheus metrics for the worker daemon (`--metrics-port`), served on /metrics by
prometheus-client's own HTTP server. Imported by `gpumesh worker run`.

- `gpumesh_worker_events_total{event}`: what it did (jobs_seen, jobs_claimed, jobs_submitted,
  jobs_skipped, jobs_refused_<reason>, units_executed, withdrawals, job_errors, reorgs_seen...);
- gauges, refreshed by the daemon at most every `WorkerNode.METRICS_SECONDS` (they cost RPC
  requests): `gpumesh_worker_stake_wei`, `_free_stake_wei`, `_locked_stake_wei`, `_balance_wei`
  (the account's ETH for gas), `_active_jobs` (claimed, submitted or finalizing), `_outbox_depth`
  (transactions signed and not yet settled);
- `gpumesh_worker_rpc_requests_total{method}` and `gpumesh_worker_rpc_errors_total`, live from
  the worker's transport (gpumesh.node.common.metrics).
"""

from __future__ import annotations

from gpumesh.node.common.metrics import RpcCollector

#: Gauge name -> help text; `observe(**values)` sets them by these names.
GAUGES = {
    "stake_wei": "The worker's total stake in the WorkerRegistry (wei)",
    "free_stake_wei": "Stake a new claim can lock (wei)",
    "locked_stake_wei": "Stake locked by claimed jobs (wei)",
    "balance_wei": "The worker account's balance, for gas (wei)",
    "active_jobs": "Jobs claimed, submitted or finalizing",
    "outbox_depth": "Transactions signed and recorded, not yet settled",
}


class WorkerMetrics:
    """`inc(name)` counts events; `observe(name=value, ...)` sets the gauges; `rpc(stats)` wires
    the RPC counters to the worker's transport."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self._events = Counter("gpumesh_worker_events", "What the worker did", ["event"], registry=self.registry)
        self._gauges = {k: Gauge(f"gpumesh_worker_{k}", text, registry=self.registry) for k, text in GAUGES.items()}
        self._stats = None
        self.registry.register(RpcCollector("gpumesh_worker", lambda: self._stats))
        self.server = None
        self.url: str | None = None

    def inc(self, name: str, n: int = 1) -> None:
        self._events.labels(event=name).inc(n)

    def observe(self, **values: float) -> None:
        for k, v in values.items():
            self._gauges[k].set(v)

    def rpc(self, stats) -> None:
        self._stats = stats

    def serve(self, port: int, addr: str = "127.0.0.1") -> str:
        """Serve /metrics; returns its URL (the daemon announces it)."""
        from prometheus_client import start_http_server

        self.server, _ = start_http_server(port, addr=addr, registry=self.registry)
        self.url = f"http://{addr}:{self.server.server_port}/metrics"
        return self.url

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
