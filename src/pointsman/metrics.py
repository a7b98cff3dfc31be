"""Prometheus metrics. Label values come only from the config (model, deployment, strategy and
reason names) so cardinality stays bounded; per-key labels only when configured."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """One registry per router, so several routers in one process do not collide."""

    def __init__(self, models: Iterable[str], deployments: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.known_models = set(models) | set(deployments)
        r = self.registry
        self.requests = Counter(
            "pointsman_requests",
            "Requests by model asked for, deployment that answered, status",
            ["model", "deployment", "status"],
            registry=r,
        )
        self.errors = Counter(
            "pointsman_errors", "Failed requests by model and error code", ["model", "code"], registry=r
        )
        self.attempt_failures = Counter(
            "pointsman_upstream_failures", "Failed upstream calls by deployment", ["deployment"], registry=r
        )
        self.latency = Histogram(
            "pointsman_request_duration_seconds",
            "Total request latency",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "pointsman_first_token_seconds",
            "Time to the first streamed chunk",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "pointsman_overhead_seconds",
            "Time spent in pointsman itself",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "pointsman_tokens", "Tokens by deployment and direction", ["deployment", "direction"], registry=r
        )
        self.cost = Counter(
            "pointsman_cost_usd", "Spend in US dollars by deployment", ["deployment"], registry=r
        )
        self.fallbacks = Counter(
            "pointsman_fallbacks",
            "Requests answered by a deployment after another failed",
            ["model"],
            registry=r,
        )
        self.decisions = Counter(
            "pointsman_decisions",
            "Routing decisions by strategy and reason",
            ["strategy", "reason"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "pointsman_budget_remaining_usd", "Money left in a budget this period", ["budget"], registry=r
        )
        self.backend_up = Gauge("pointsman_backend_up", "Shared backends reachable (1) or degraded (0)",
                                ["backend"], registry=r)
        self._circuits: Callable[[], dict[str, str]] = dict
        r.register(_CircuitCollector(self))
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: prometheus_client's lookup costs more than a dict's
        on every request, and label values are bounded (config names, status codes)."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def model_label(self, model: Any) -> str:
        return model if isinstance(model, str) and model in self.known_models else "other"

    def watch_circuits(self, circuits: Callable[[], dict[str, str]]) -> None:
        self._circuits = circuits

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CircuitCollector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pointsman_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
            labels=["deployment"],
        )
        for name, state in self.metrics._circuits().items():
            family.add_metric([name], CIRCUIT_VALUES.get(state, 0))
        yield family
