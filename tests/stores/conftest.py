"""Every idempotency store, built on a real backend, for the one contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.support import postgres

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore

SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@asynccontextmanager
async def migrated_database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A new, migrated database of ``backend``, dropped afterwards."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'store.db'}")
        name = None
    else:
        if not await postgres.reachable():
            pytest.skip(postgres.SKIP_REASON)
        name = await postgres.create_database()
        db = Database(postgres.url_of(name))
    await upgrade(db)
    try:
        yield db
    finally:
        await db.dispose()
        if name is not None:
            await postgres.drop_database(name)


@pytest.fixture(params=SQL_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture(params=["memory", *SQL_BACKENDS])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryIdempotencyStore(lease_seconds=30)
        return
    async with migrated_database(request.param, tmp_path) as db:
        yield SqlIdempotencyStore(db)
