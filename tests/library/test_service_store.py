"""The reference service on an idempotency store of another URL (what serve's flag will pass)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from tests.conftest import TEST_SETTINGS, migrate, with_database
from tests.support import redis_service
from tests.support.lifespan import lifespan, running
from tests.support.throwaway import free_port

from retrysafe.database import Database
from retrysafe.service import admin
from retrysafe.service.app import create_app
from retrysafe.settings import STORE_SCHEMES
from retrysafe.stores.url import SCHEMES


@pytest.mark.redis
async def test_the_service_keeps_its_records_in_redis_when_told(tmp_path: Path) -> None:
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)
    database_url = f"sqlite:///{tmp_path / 'service.db'}"
    migrate(database_url)

    async def new_key(db: Database) -> tuple[str, str]:
        return await admin.create_api_key(db, "acme")

    _, secret = with_database(database_url, new_key)
    with sqlite3.connect(tmp_path / "service.db") as conn:
        [(org_id,)] = conn.execute("SELECT id FROM organizations").fetchall()
    settings = replace(
        TEST_SETTINGS,
        database_url=database_url,
        document_dir=tmp_path / "docs",
        idempotency_store=redis_service.URL,
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "acct-1"}
    body = {"data": {"attributes": {"reference_id": "user-1"}}}
    prefix = f"retrysafe:idem:{org_id}:"
    try:
        transport = httpx.ASGITransport(app=app)
        async with (
            running(app) as started,
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            assert started[0]["type"] == "lifespan.startup.complete"
            first = await http.post("/api/v1/accounts", json=body, headers=headers)
            replay = await http.post("/api/v1/accounts", json=body, headers=headers)
        redis = Redis.from_url(redis_service.URL)
        try:
            kept = [key async for key in redis.scan_iter(match=prefix + "*")]
        finally:
            await redis.aclose()
    finally:
        await redis_service.delete_prefixed(prefix)
    assert first.status_code == 201, first.text
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(kept) == 1
    with sqlite3.connect(tmp_path / "service.db") as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_records").fetchone() == (0,)


async def test_an_unreachable_store_fails_the_services_start_up(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'service.db'}"
    migrate(database_url)
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    settings = replace(
        TEST_SETTINGS,
        database_url=database_url,
        document_dir=tmp_path / "docs",
        idempotency_store=unreachable,
    )
    app = create_app(settings)
    sent = await lifespan(app)
    assert sent[-1]["type"] == "lifespan.startup.failed"
    assert "The idempotency store (redis) at redis://127.0.0.1:" in sent[-1]["message"]


def test_an_unknown_store_scheme_is_refused_before_serving(tmp_path: Path) -> None:
    settings = replace(
        TEST_SETTINGS,
        database_url=f"sqlite:///{tmp_path / 's.db'}",
        idempotency_store="mongodb://h/db",
    )
    with pytest.raises(ValueError, match="Unknown idempotency store URL"):
        create_app(settings)


def test_serve_and_the_factory_accept_the_same_schemes() -> None:
    assert set(SCHEMES) == STORE_SCHEMES
