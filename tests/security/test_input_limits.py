"""Explicit limits on the request head: header bytes and query-string length.

Each limit answers the SPEC §1 envelope (never a 500, never a hang) over real
HTTP. The SPEC's table has no 431 or 414, so both are 400 with their own codes.
Body limits (size, JSON depth, form parts) are in test_body_limits.py.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from tests.conftest import LiveServer
from tests.service.api_calls import envelope

SMALL_LIMITS = {
    "max_header_bytes": 4096,
    "max_query_bytes": 1024,
}


@pytest.fixture
def limited(live_server: Callable[..., LiveServer]) -> LiveServer:
    return live_server(**SMALL_LIMITS)


@pytest.fixture
def http(limited: LiveServer) -> Iterator[httpx.Client]:
    with limited.client(limited.new_key()) as client:
        yield client


def raw_request(server: LiveServer, request: bytes) -> bytes:
    """Send bytes as they are (httpx refuses some of what an attacker sends) and read the answer."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_oversized_headers_are_400(http: httpx.Client) -> None:
    response = http.get("/accounts", headers={"X-Padding": "a" * 5000})
    errors = envelope(response, 400, "headers_too_large")
    assert "4096" in errors[0]["details"]
    assert "ratelimit-limit" not in response.headers  # refused before the limiter counted it


def test_a_megabyte_header_is_refused_not_served(limited: LiveServer) -> None:
    """uvicorn itself accepts it; the pipeline does not let any layer process it."""
    request = (
        b"GET /api/v1/accounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Padding: " + b"a" * 1_000_000 + b"\r\n\r\n"
    )
    answer = raw_request(limited, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code":"headers_too_large"' in answer


def test_long_query_is_400(http: httpx.Client) -> None:
    response = http.get("/accounts", params={"filter[reference_id]": "r" * 2000})
    envelope(response, 400, "query_too_long")
