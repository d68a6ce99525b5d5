"""Optional Prometheus metrics of the watchtower (served on /metrics by `--metrics-port`).

Each Watchtower gets its own CollectorRegistry, so two in one process (tests) never collide.
Imported by the watchtower daemon and its CLI entry point.
"""

from __future__ import annotations

from gpumesh.node.common.metrics import RpcCollector


class WatchtowerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_checked = Counter("gpumesh_watchtower_jobs_checked", "Jobs checked, by result",
                                    ["result"], registry=r)
        self.units_checked = Counter("gpumesh_watchtower_units_checked", "Units re-executed", registry=r)
        self.challenges = Counter("gpumesh_watchtower_challenges", "Dispute games opened", registry=r)
        self.games_resolved = Counter("gpumesh_watchtower_games_resolved", "Our games resolved, by outcome",
                                      ["outcome"], registry=r)
        self.moves = Counter("gpumesh_watchtower_transactions", "Transactions mined (moves, challenges, "
                             "withdrawals)", registry=r)
        self.open_games = Gauge("gpumesh_watchtower_open_games", "Our games still open", registry=r)
        self.job_errors = Counter("gpumesh_watchtower_job_errors", "Jobs or games whose handler failed in a "
                                  "tick (the others went on; retried next tick)", registry=r)
        self.tick_errors = Counter("gpumesh_watchtower_tick_errors", "Ticks that failed and were retried",
                                   registry=r)
        self._stats = None
        r.register(RpcCollector("gpumesh_watchtower", lambda: self._stats))
        self.url: str | None = None

    def rpc(self, stats) -> None:
        """Read the RPC counters from the watchtower's transport (gpumesh.client.chain.provider)."""
        self._stats = stats

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Serve /metrics; returns the server (call .shutdown() to stop it)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self.url = f"http://{addr}:{server.server_port}/metrics"
        return server

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
