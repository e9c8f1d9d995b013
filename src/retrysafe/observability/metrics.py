"""Prometheus metrics of one server process, and ``/metrics`` across all of its workers.

With ``retrysafe serve --workers N`` each worker is its own process with its own
counters. prometheus-client's multiprocess mode keeps every worker's values in
memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` and sums them when any one
worker is scraped, so a scrape reports the whole server whichever worker answers.
``serve`` creates that directory (empty, as the mode requires) before it starts
the workers and removes it when they have stopped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "Metrics",
    "metrics_route",
    "multiprocess_directory",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; from a replay (a few ms) to the default request timeout (30 s)."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Every metric the service exports, registered in a registry of its own.

    A registry per instance (instead of prometheus-client's global one) lets tests
    and embedding applications build several apps in one process. Label children
    are cached: ``labels()`` takes a lock and builds a tuple on every call, and
    the request metrics are updated on every request.
    """

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "retrysafe_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "retrysafe_http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.idempotency = Counter(
            "retrysafe_idempotency_requests",
            "Requests carrying an Idempotency-Key, by outcome: executed, replayed, mismatch,"
            " in_flight, not_recorded.",
            ("outcome",),
            registry=registry,
        )
        self.records_stored = Counter(
            "retrysafe_idempotency_records_stored",
            "Idempotency records completed with a response (one per executed request).",
            registry=registry,
        )
        self.records_purged = Counter(
            "retrysafe_idempotency_records_purged",
            "Expired idempotency records deleted by this server's background purge.",
            registry=registry,
        )
        self.rate_limited = Counter(
            "retrysafe_rate_limited",
            "Requests refused with 429: over the rate limit, or too many failed"
            " authentications from one address.",
            registry=registry,
        )
        self.shed = Counter(
            "retrysafe_shed",
            "Requests refused with 503 because the process had --max-in-flight requests.",
            registry=registry,
        )
        self.dependency_errors = Counter(
            "retrysafe_dependency_errors",
            "Failures to reach the database or Redis (requests answered 503, failed purges,"
            " failed API-log writes).",
            ("dependency",),
            registry=registry,
        )
        self.api_log_written = Counter(
            "retrysafe_api_log_entries_written",
            "API-log entries inserted into the database.",
            registry=registry,
        )
        self.api_log_dropped = Counter(
            "retrysafe_api_log_entries_dropped",
            "API-log entries dropped because the write buffer was full.",
            registry=registry,
        )
        self.api_log_purged = Counter(
            "retrysafe_api_log_entries_purged",
            "API-log entries deleted after --api-log-retention.",
            registry=registry,
        )
        # Children of labelled metrics, created on first use; see the class docstring.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._outcome_children: dict[str, Counter] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        method = method if method in _METHODS else "OTHER"  # a client cannot add label values
        key = (method, route, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(method, route, str(status))
        counter.inc()
        duration_key = (method, route)
        histogram = self._duration_children.get(duration_key)
        if histogram is None:
            histogram = self._duration_children[duration_key] = self.duration.labels(method, route)
        histogram.observe(seconds)

    def observe_outcome(self, outcome: str) -> None:
        """Count one idempotency outcome; ``executed`` also counts a stored record."""
        counter = self._outcome_children.get(outcome)
        if counter is None:
            counter = self._outcome_children[outcome] = self.idempotency.labels(outcome)
        counter.inc()
        if outcome == "executed":
            self.records_stored.inc()

    def dependency_error(self, dependency: str) -> None:
        self.dependency_errors.labels(dependency).inc()

    def render(self) -> bytes:
        """The text exposition format: this process's registry, or every worker's files."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` to a new empty directory for the workers to come.

    Must run before the workers import prometheus-client (it picks its storage at
    import time); uvicorn's workers are spawned fresh, so they do. An operator's
    own ``PROMETHEUS_MULTIPROC_DIR`` is used as it is and left in place.
    """
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        yield existing
        return
    path = tempfile.mkdtemp(prefix="retrysafe-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def metrics_route(metrics: Metrics, path: str = "/metrics") -> Route:
    """``GET /metrics`` in the text exposition format, rendered per scrape."""

    async def scrape(_request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Route(path, scrape, methods=["GET"], include_in_schema=False)
