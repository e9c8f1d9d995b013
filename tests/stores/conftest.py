"""Every idempotency store, built on a real backend, for the one contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.support import postgres, redis_service

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.redis import RedisIdempotencyStore
from retrysafe.stores.sql import DEFAULT_LEASE_SECONDS
from retrysafe.stores.url import store_from_url

SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@asynccontextmanager
async def migrated_database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A new, migrated database of ``backend``, dropped afterwards."""
    async with store_url(backend, tmp_path) as (url, _):
        db = Database(url)
        await upgrade(db)
        try:
            yield db
        finally:
            await db.dispose()


@pytest.fixture(params=SQL_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path) as db:
        yield db


@asynccontextmanager
async def redis_store(*, lease_seconds: float = 30) -> AsyncIterator[RedisIdempotencyStore]:
    """A store on the shared Redis under a key prefix of its own, deleted afterwards."""
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)
    prefix = redis_service.fresh_prefix("idem")
    store = RedisIdempotencyStore.from_url(
        redis_service.URL, lease_seconds=lease_seconds, prefix=prefix
    )
    try:
        yield store
    finally:
        await store.aclose()
        await redis_service.delete_prefixed(prefix)


STORE_BACKENDS = [
    "memory",
    *SQL_BACKENDS,
    pytest.param("redis", marks=pytest.mark.redis),
]


@asynccontextmanager
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, str | None]]:
    """A URL for a new, empty store of ``backend`` (and its Redis key prefix), removed after."""
    if backend == "memory":
        yield "memory://", None
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", None
    elif backend == "postgresql":
        async with postgres.new_database() as url:
            yield url, None
    else:
        if not await redis_service.reachable():
            pytest.skip(redis_service.SKIP_REASON)
        prefix = redis_service.fresh_prefix("idem")
        try:
            yield redis_service.URL, prefix
        finally:
            await redis_service.delete_prefixed(prefix)


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    """Every backend, built from a URL as the library and the server build it."""
    async with store_url(request.param, tmp_path) as (url, prefix):
        lease = DEFAULT_LEASE_SECONDS if request.param in ("sqlite", "postgresql") else 30
        opened = store_from_url(url, lease_seconds=lease, redis_prefix=prefix)
        await opened.start()
        try:
            yield opened.store
        finally:
            await opened.aclose()
