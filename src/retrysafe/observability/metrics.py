"""Prometheus metrics of one server process, and ``/metrics`` across all of its workers.

With ``retrysafe serve --workers N`` each worker is its own process with its own
counters. prometheus-client's multiprocess mode keeps every worker's values in
memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` and sums them when any one
worker is scraped, so a scrape reports the whole server whichever worker answers.
``serve`` creates that directory (empty, as the mode requires) before it starts
the workers and removes it when they have stopped. In one process the metrics
updated on every request live in plain dicts instead (:class:`ProcessRequestMetrics`),
which the scrape renders as the same series.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import prometheus_client.metrics
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
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

REQUESTS = "retrysafe_http_requests"
REQUESTS_HELP = "HTTP requests answered, by method, route template and status."
DURATION = "retrysafe_http_request_duration_seconds"
DURATION_HELP = "Time from the request's arrival to the end of its answer."
OUTCOMES = "retrysafe_idempotency_requests"
OUTCOMES_HELP = (
    "Requests carrying an Idempotency-Key, by outcome: executed, replayed, mismatch,"
    " in_flight, not_recorded."
)
RECORDS_STORED = "retrysafe_idempotency_records_stored"
RECORDS_STORED_HELP = "Idempotency records completed with a response (one per executed request)."


class _Series:
    """One label set's value in this process, and when it was first counted."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class _Latencies:
    """One label set's histogram in this process: a count per bucket, the sum, the creation."""

    __slots__ = ("buckets", "created", "total")

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * (bounds + 1)  # the last one is +Inf
        self.total = 0.0
        self.created = time.time()


class ProcessRequestMetrics(Collector):
    """The per-request metrics of one process, in plain dicts, exposed at scrape time.

    prometheus-client's ``inc`` and ``observe`` take a lock per call, and
    ``observe`` walks the buckets in Python: about 2 µs a request for the four
    updates the observation layer makes. Here a request costs a dict lookup and a
    bisect; the samples are built when ``/metrics`` is scraped, with the same
    names, help, labels, bucket bounds and ``_created`` series as the
    prometheus-client metrics they replace, so the exposition does not change.
    Only for one process: a multiprocess server's workers must write to the shared
    files at once, so :class:`Metrics` keeps prometheus-client objects there. Not
    thread-safe, and need not be: the observation layer updates it from the event
    loop only.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.requests: dict[tuple[str, str, int], _Series] = {}
        self.latencies: dict[tuple[str, str], _Latencies] = {}
        self.outcomes: dict[str, _Series] = {}
        self.records_stored = _Series()
        self._bucket_labels = [*map(floatToGoString, buckets), "+Inf"]

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self.requests.get((method, route, status))
        if series is None:
            series = self.requests[(method, route, status)] = _Series()
        series.value += 1
        latencies = self.latencies.get((method, route))
        if latencies is None:
            latencies = self.latencies[(method, route)] = _Latencies(len(self.bounds))
        # bisect_left: a value equal to a bound belongs to that bucket (le means ≤).
        latencies.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        latencies.total += seconds

    def observe_outcome(self, outcome: str) -> None:
        series = self.outcomes.get(outcome)
        if series is None:
            series = self.outcomes[outcome] = _Series()
        series.value += 1
        if outcome == "executed":
            self.records_stored.value += 1

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry refuses a second metric of the same name.
        return [
            Metric(REQUESTS, REQUESTS_HELP, "counter"),
            Metric(DURATION, DURATION_HELP, "histogram"),
            Metric(OUTCOMES, OUTCOMES_HELP, "counter"),
            Metric(RECORDS_STORED, RECORDS_STORED_HELP, "counter"),
        ]

    def collect(self) -> Iterable[Metric]:
        created = getattr(prometheus_client.metrics, "_use_created", True)
        requests = Metric(REQUESTS, REQUESTS_HELP, "counter")
        for (method, route, status), series in list(self.requests.items()):
            labels = {"method": method, "route": route, "status": str(status)}
            _add_counter(requests, labels, series, created)
        duration = Metric(DURATION, DURATION_HELP, "histogram")
        for (method, route), latencies in list(self.latencies.items()):
            labels = {"method": method, "route": route}
            cumulative = 0
            for bound, count in zip(self._bucket_labels, latencies.buckets, strict=True):
                cumulative += count
                duration.add_sample(DURATION + "_bucket", {**labels, "le": bound}, cumulative)
            duration.add_sample(DURATION + "_count", labels, float(cumulative))
            duration.add_sample(DURATION + "_sum", labels, latencies.total)
            if created:
                duration.add_sample(DURATION + "_created", labels, latencies.created)
        outcomes = Metric(OUTCOMES, OUTCOMES_HELP, "counter")
        for outcome, series in list(self.outcomes.items()):
            _add_counter(outcomes, {"outcome": outcome}, series, created)
        stored = Metric(RECORDS_STORED, RECORDS_STORED_HELP, "counter")
        _add_counter(stored, {}, self.records_stored, created)
        return [requests, duration, outcomes, stored]


def _add_counter(metric: Metric, labels: dict[str, str], series: _Series, created: bool) -> None:
    metric.add_sample(metric.name + "_total", labels, series.value)
    if created:
        metric.add_sample(metric.name + "_created", labels, series.created)


class _SharedRequestMetrics:
    """The per-request metrics through prometheus-client, for multiprocess mode's shared files.

    Label children are cached: ``labels()`` takes a lock and builds a tuple on
    every call, and these are updated on every request.
    """

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.requests = Counter(
            REQUESTS, REQUESTS_HELP, ("method", "route", "status"), registry=registry
        )
        self.duration = Histogram(
            DURATION, DURATION_HELP, ("method", "route"), buckets=buckets, registry=registry
        )
        self.idempotency = Counter(OUTCOMES, OUTCOMES_HELP, ("outcome",), registry=registry)
        self.records_stored = Counter(RECORDS_STORED, RECORDS_STORED_HELP, registry=registry)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._outcome_children: dict[str, Counter] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
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
        counter = self._outcome_children.get(outcome)
        if counter is None:
            counter = self._outcome_children[outcome] = self.idempotency.labels(outcome)
        counter.inc()
        if outcome == "executed":
            self.records_stored.inc()


class Metrics:
    """Every metric the service exports, registered in a registry of its own.

    A registry per instance (instead of prometheus-client's global one) lets tests
    and embedding applications build several apps in one process. The metrics
    updated on every request (requests, latency, idempotency outcomes) are kept
    by :class:`ProcessRequestMetrics` in one process and by prometheus-client in
    multiprocess mode; the rest are prometheus-client metrics either way.
    """

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._per_request: ProcessRequestMetrics | _SharedRequestMetrics
        if self.multiprocess_dir is None:
            self._per_request = ProcessRequestMetrics(LATENCY_BUCKETS)
            registry.register(self._per_request)
        else:
            self._per_request = _SharedRequestMetrics(registry, LATENCY_BUCKETS)
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

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        method = method if method in _METHODS else "OTHER"  # a client cannot add label values
        self._per_request.observe_request(method, route, status, seconds)

    def observe_outcome(self, outcome: str) -> None:
        """Count one idempotency outcome; ``executed`` also counts a stored record."""
        self._per_request.observe_outcome(outcome)

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
