"""Unreachable dependencies show in /metrics: Redis behind the rate limiter, the database."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from tests.conftest import LiveServer


def dependency_errors(server: LiveServer, dependency: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(
        rf'retrysafe_dependency_errors_total{{dependency="{dependency}"}} ([0-9.]+)', text
    )
    return float(match.group(1)) if match else 0.0


def test_an_unreachable_redis_is_counted_while_limits_degrade(
    live_server: Callable[..., LiveServer],
) -> None:
    """Nothing listens on port 1: the limiter falls back to local counts, each failure counted."""
    server = live_server(redis_url="redis://127.0.0.1:1/0")
    with server.client(server.new_key()) as http:
        assert http.get("/accounts").status_code == 200
    assert dependency_errors(server, "redis") >= 1
    assert dependency_errors(server, "database") == 0
