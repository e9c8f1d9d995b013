"""A store that goes away under a running mount: a 503 that names the idempotency store.

Each test runs its own Redis or PostgreSQL (``tests/support/throwaway.py``) and
stops it mid-run, so no other test is hurt. The answer must name what is down
honestly (the idempotency store and its kind, never "the database" for Redis),
say nothing ran, and leave no claim behind: once the store is back, the same key
runs once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from tests.support.lifespan import running
from tests.support.throwaway import (
    ThrowawayPostgres,
    ThrowawayRedis,
    skip_without_postgres_binaries,
    skip_without_redis_binary,
)

from retrysafe.asgi import RetrySafe

from .test_mount import JSON, KEYED, client, orders_api

pytestmark = pytest.mark.slow


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    skip_without_redis_binary()
    with ThrowawayRedis() as server:
        yield server


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    skip_without_postgres_binaries()
    with ThrowawayPostgres() as server:
        yield server


async def outage_then_recovery(
    url: str, stop: Callable[[], None], start: Callable[[], None], kind: str
) -> None:
    """A create, the store stopped, a keyed create (503), the store back, that create again."""
    api = orders_api()
    mounted = RetrySafe(api, store=url)
    async with running(mounted), client(mounted) as http:
        before = await http.post("/orders", json={}, headers={**KEYED, "Idempotency-Key": "a"})
        assert before.status_code == 201
        await asyncio.to_thread(stop)
        down = await http.post("/orders", json={"n": 1}, headers=KEYED)
        await asyncio.to_thread(start)
        back = await http.post("/orders", json={"n": 1}, headers=KEYED)
        replay = await http.post("/orders", json={"n": 1}, headers=KEYED)
    [error] = down.json()["errors"]
    assert (down.status_code, error["code"]) == (503, "service_unavailable")
    assert error["details"].startswith(
        f"The idempotency store ({kind}) is unreachable; the request did not run."
    ), error["details"]
    assert "database" not in error["details"]
    assert down.headers["retry-after"] == "1"
    assert down.headers["content-type"] == JSON["content-type"]
    assert back.status_code == 201, back.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert api.state.runs == 2  # "before", and the key once the store was back


@pytest.mark.redis
async def test_redis_going_away_is_a_503_naming_the_idempotency_store(
    throwaway_redis: ThrowawayRedis,
) -> None:
    server = throwaway_redis
    await outage_then_recovery(server.url, server.stop, server.start, "redis")


@pytest.mark.postgres
async def test_postgresql_going_away_is_a_503_naming_the_idempotency_store(
    throwaway_postgres: ThrowawayPostgres,
) -> None:
    server = throwaway_postgres
    await outage_then_recovery(server.url(), server.stop, server.start, "postgresql")
