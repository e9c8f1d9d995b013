"""store_from_url: one factory for every backend, clear errors for the URLs it cannot serve."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from tests.support import redis_service
from tests.support.throwaway import free_port

from retrysafe.idempotency.decisions import Execute, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.redis import RedisIdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore
from retrysafe.stores.url import UrlStore, display_url, store_from_url
from retrysafe.unavailable import StoreUnavailable

KEY = RecordKey("org_1", "order-7")
RESPONSE = StoredResponse(201, b'{"id":"o_1"}', "application/json", "/orders/o_1")


async def executes_then_replays(store: UrlStore) -> None:
    """One claim, completed; the same key then replays what was recorded."""
    async with store.attempt(KEY, "fp", now=1000.0, ttl=60) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.complete(RESPONSE)
    async with store.attempt(KEY, "fp", now=1001.0, ttl=60) as decision:
        assert decision == Replay(RESPONSE)


@pytest.mark.parametrize(
    "url",
    ["mongodb://h/db", "sqlite", "http://localhost/", "", "memcached://127.0.0.1:11211"],
)
def test_an_unknown_scheme_is_a_value_error_naming_the_schemes_there_are(url: str) -> None:
    with pytest.raises(ValueError, match="Unknown idempotency store URL") as raised:
        store_from_url(url)
    assert "memory://" in str(raised.value)
    assert "redis://" in str(raised.value)


def test_the_password_never_reaches_a_message() -> None:
    assert display_url("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert display_url("redis://:hunter2@cache/0") == "redis://:***@cache/0"
    assert display_url("sqlite:///idem.db") == "sqlite:///idem.db"
    with pytest.raises(ValueError, match="Unknown idempotency store URL") as raised:
        store_from_url("mongodb://app:hunter2@h/db")
    assert "hunter2" not in str(raised.value)


def test_a_memory_url_takes_nothing_after_the_scheme() -> None:
    with pytest.raises(ValueError, match="nothing after memory://"):
        store_from_url("memory://somewhere")


async def test_memory_store() -> None:
    store = store_from_url("memory://")
    await store.start()
    assert isinstance(store.store, MemoryIdempotencyStore)
    await executes_then_replays(store)


async def test_sqlite_store_creates_only_the_records_table(tmp_path: Path) -> None:
    path = tmp_path / "idem.db"
    store = store_from_url(f"sqlite:///{path}")
    await store.start()
    try:
        assert isinstance(store.store, SqlIdempotencyStore)
        await executes_then_replays(store)
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
    assert tables == ["idempotency_records"]
    # A second start on the same file finds its table and its record.
    again = store_from_url(f"sqlite:///{path}")
    try:
        async with again.attempt(KEY, "fp", now=1002.0, ttl=60) as decision:
            assert decision == Replay(RESPONSE)
    finally:
        await again.aclose()


async def test_an_unreachable_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 'missing-dir' / 'idem.db'}")
    kind = r"The idempotency store \(sqlite\) at sqlite:///"
    with pytest.raises(StoreUnavailable, match=kind) as raised:
        await store.start()
    assert raised.value.dependency == "database"
    # aiosqlite stops a connection that failed to open by resolving one more future on
    # this loop from its thread: let that happen before the loop closes.
    await asyncio.sleep(0.2)


@pytest.mark.postgres
async def test_postgresql_store(postgres_url: str) -> None:
    store = store_from_url(postgres_url)
    await store.start()
    try:
        assert isinstance(store.store, SqlIdempotencyStore)
        await executes_then_replays(store)
    finally:
        await store.aclose()


async def test_an_unreachable_postgresql_is_store_unavailable_without_its_password() -> None:
    store = store_from_url(f"postgresql://app:hunter2@127.0.0.1:{free_port()}/x")
    with pytest.raises(StoreUnavailable) as raised:
        await store.start()
    assert "The idempotency store (postgresql) at postgresql://app:***@127.0.0.1" in str(
        raised.value
    )
    assert "hunter2" not in str(raised.value)
    assert raised.value.dependency == "database"


@pytest.mark.redis
async def test_redis_store() -> None:
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)
    prefix = redis_service.fresh_prefix("url")
    store = store_from_url(redis_service.URL, redis_prefix=prefix)
    await store.start()
    try:
        assert isinstance(store.store, RedisIdempotencyStore)
        assert store.store.prefix == prefix
        await executes_then_replays(store)
    finally:
        await store.aclose()
        await redis_service.delete_prefixed(prefix)


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    store = store_from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable, match="unreachable") as raised:
        await store.start()
    assert raised.value.dependency == "redis"


async def test_without_start_the_first_attempt_opens_the_store(tmp_path: Path) -> None:
    """An app served without lifespan events still gets its store, on first use."""
    store = store_from_url(f"sqlite:///{tmp_path / 'lazy.db'}")
    try:
        await executes_then_replays(store)
    finally:
        await store.aclose()
