"""Metrics: the exposition of one process, and the sum over worker processes (multiprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from retrysafe.observability.metrics import MULTIPROC_ENV, Metrics, multiprocess_directory

WORKER = """
from retrysafe.observability.metrics import Metrics
metrics = Metrics()
for _ in range({count}):
    metrics.observe_request("POST", "/api/v1/accounts", 201, 0.02)
metrics.observe_outcome("replayed")
print(metrics.render().decode())
"""


def run_worker(directory: Path, count: int) -> str:
    """A fresh interpreter, as uvicorn spawns its workers: it picks multiprocess mode at import."""
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    return subprocess.run(
        [sys.executable, "-c", WORKER.format(count=count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_one_process_renders_its_own_registry() -> None:
    metrics = Metrics()
    metrics.observe_request("GET", "/health", 200, 0.001)
    metrics.observe_request("BREW", "/health", 405, 0.001)
    metrics.observe_outcome("executed")
    metrics.dependency_error("redis")
    text = metrics.render().decode()
    assert 'retrysafe_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert 'method="OTHER"' in text  # a client cannot mint label values with its method
    assert 'retrysafe_idempotency_requests_total{outcome="executed"} 1.0' in text
    assert "retrysafe_idempotency_records_stored_total 1.0" in text
    assert 'retrysafe_dependency_errors_total{dependency="redis"} 1.0' in text
    assert "retrysafe_http_request_duration_seconds_bucket" in text


def test_workers_add_up_whichever_one_is_scraped(tmp_path: Path) -> None:
    """Two worker processes count 3 and 4; the second one's scrape reports 7."""
    run_worker(tmp_path, 3)
    text = run_worker(tmp_path, 4)
    line = 'retrysafe_http_requests_total{method="POST",route="/api/v1/accounts",status="201"} 7.0'
    assert line in text
    assert 'retrysafe_idempotency_requests_total{outcome="replayed"} 2.0' in text


def test_serve_gets_an_empty_directory_and_it_is_removed_after() -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    with multiprocess_directory() as path:
        assert os.environ[MULTIPROC_ENV] == path
        assert os.listdir(path) == []
    assert MULTIPROC_ENV not in os.environ
    assert not Path(path).exists()


def test_an_operators_directory_is_used_and_kept(tmp_path: Path) -> None:
    os.environ[MULTIPROC_ENV] = str(tmp_path)
    try:
        with multiprocess_directory() as path:
            assert path == str(tmp_path)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
    assert tmp_path.exists()


def _without_creation_times(text: str) -> list[str]:
    return [
        line.rsplit(" ", 1)[0] if "_created{" in line or "_created " in line else line
        for line in text.splitlines()
    ]


def test_the_per_process_request_metrics_expose_what_prometheus_client_would() -> None:
    """Same names, help, labels, buckets (a value on a bound included) and _created series."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    from retrysafe.observability.metrics import LATENCY_BUCKETS, _SharedRequestMetrics

    observations = [
        ("POST", "/api/v1/accounts", 201, 0.003),
        ("POST", "/api/v1/accounts", 201, 0.01),  # exactly on a bound: le="0.01"
        ("POST", "/api/v1/accounts", 409, 0.2),
        ("GET", "/health", 200, 45.0),  # past the last bound: +Inf only
    ]
    outcomes = ["executed", "replayed", "executed"]
    fast = Metrics(multiprocess_dir=None)
    reference_registry = CollectorRegistry(auto_describe=True)
    reference = _SharedRequestMetrics(reference_registry, LATENCY_BUCKETS)
    for observation in observations:
        fast.observe_request(*observation)
        reference.observe_request(*observation)
    for outcome in outcomes:
        fast.observe_outcome(outcome)
        reference.observe_outcome(outcome)
    fast_lines = _without_creation_times(fast.render().decode())
    reference_lines = _without_creation_times(generate_latest(reference_registry).decode())
    assert reference_lines  # the comparison below compares something
    for line in reference_lines:
        assert line in fast_lines
    assert (
        fast.registry.get_sample_value(
            "retrysafe_http_request_duration_seconds_bucket",
            {"method": "POST", "route": "/api/v1/accounts", "le": "0.01"},
        )
        == 2.0
    )
    assert fast.registry.get_sample_value("retrysafe_idempotency_records_stored_total") == 2.0
