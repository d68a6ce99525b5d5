"""Optional Prometheus metrics for the worker daemon (`--metrics-port`): counters of what it did,
served on /metrics by prometheus-client's own HTTP server. Imported by `gpumesh worker run`."""

from __future__ import annotations


class WorkerMetrics:
    """`inc(name)` counts events (jobs_seen, jobs_claimed, jobs_submitted, jobs_skipped,
    jobs_rejected, units_executed, withdrawals...) under gpumesh_worker_events_total{event=...}."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self._events = Counter("gpumesh_worker_events", "What the worker did", ["event"], registry=self.registry)
        self.server = None

    def inc(self, name: str, n: int = 1) -> None:
        self._events.labels(event=name).inc(n)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        self.server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
