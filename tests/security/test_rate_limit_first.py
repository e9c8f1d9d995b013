"""Rate limiting happens before any database work: a limited key gets 429 with the database down.

The server runs on a PostgreSQL of its own; once the key's budget is spent the
database is stopped, and the next request is still answered 429 (not 503): the
limiter decided without a query. ``/health`` confirms the database really is gone.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from tests.conftest import LiveServer
from tests.support.throwaway import ThrowawayPostgres, skip_without_postgres_binaries


@pytest.mark.postgres
@pytest.mark.slow
def test_a_limited_key_is_refused_without_the_database(
    live_server: Callable[..., LiveServer],
) -> None:
    skip_without_postgres_binaries()
    with ThrowawayPostgres() as database:
        server = live_server(database_url=database.url(), rate_limit="2/minute")
        key = server.new_key()
        with server.client(key) as http:
            for _ in range(2):
                assert http.get("/accounts").status_code == 200
            database.stop()
            limited = http.get("/accounts")
            health = httpx.get(server.url + "/health", timeout=30)
        server.request_stop()
    assert limited.status_code == 429, limited.text
    assert limited.json()["errors"][0]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert health.status_code == 503
