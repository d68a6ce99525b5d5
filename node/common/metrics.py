"""Metrics both daemons share: the JSON-RPC requests their transport made, by method, and the
requests that failed at the transport, read live from gpumesh.client.chain.provider.RpcStats at
each scrape (nothing to keep in step). Registered by WorkerMetrics and WatchtowerMetrics."""

from __future__ import annotations

from collections.abc import Callable


class RpcCollector:
    """A prometheus_client collector: `<prefix>_rpc_requests_total{method}` and
    `<prefix>_rpc_errors_total` from `stats()` (an RpcStats, or None before the daemon connects)."""

    def __init__(self, prefix: str, stats: Callable[[], object | None]) -> None:
        self.prefix, self.stats = prefix, stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        st = self.stats()
        req = CounterMetricFamily(f"{self.prefix}_rpc_requests", "JSON-RPC calls made to the chain's node, by method "
                                  "(each call of a batch counts)", labels=["method"])
        err = CounterMetricFamily(f"{self.prefix}_rpc_errors", "JSON-RPC requests that failed at the transport "
                                  "(node unreachable, timed out, HTTP error)")
        if st is not None:
            for method, n in sorted(st.by_method().items()):
                req.add_metric([method], n)
            err.add_metric([], st.errors)
        yield req
        yield err

    def describe(self):
        return []  # no fixed samples to check at registration (they depend on the methods seen)
