"""Every idempotency store, built on a real backend, for the one contract suite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


async def postgres_reachable() -> bool:
    try:
        import asyncpg

        conn = await asyncio.wait_for(
            asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres"), timeout=3
        )
    except Exception:  # any failure to connect means there is no usable server
        return False
    await conn.close()
    return True


async def fresh_postgres_url() -> str:
    """A new, empty database on the local PostgreSQL, or a skip saying none is there."""
    if not await postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncpg

    name = "retrysafe_test_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


async def drop_postgres(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = await fresh_postgres_url()
    db = Database(url)
    await upgrade(db)
    try:
        yield db
    finally:
        await db.dispose()
        if request.param == "postgresql":
            await drop_postgres(url)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryIdempotencyStore(lease_seconds=30)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = await fresh_postgres_url()
    db = Database(url)
    await upgrade(db)
    try:
        yield SqlIdempotencyStore(db)
    finally:
        await db.dispose()
        if request.param == "postgresql":
            await drop_postgres(url)
