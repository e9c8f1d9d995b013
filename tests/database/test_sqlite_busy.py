"""SQLite's write lock held by another process past ``busy_timeout`` is a 503, not a 500."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from retrysafe.database import Database, sqlite_driver
from retrysafe.database.engine import DatabaseUnavailable
from retrysafe.database.migrate import upgrade
from retrysafe.database.schema import organizations

ROW = {"id": "org_1", "name": "acme", "created_at": "2026-11-25T00:00:00Z"}


@pytest.fixture
async def locked_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Database]:
    """A migrated database whose write lock another connection holds (as another process would)."""
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "busy.db"
    db = Database(f"sqlite:///{path}")
    await upgrade(db)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield db
    other.rollback()
    other.close()
    await db.dispose()


async def test_prepared_statement_on_a_locked_file_is_unavailable(
    locked_database: Database,
) -> None:
    """The fast path (straight on the driver) maps "database is locked" to DatabaseUnavailable."""
    statement = locked_database.prepare(insert(organizations))
    with pytest.raises(DatabaseUnavailable, match="locked"):
        async with locked_database.write() as conn:
            await statement.rows(conn, ROW)


async def test_sqlalchemy_statement_on_a_locked_file_is_unavailable(
    locked_database: Database,
) -> None:
    """The SQLAlchemy path maps it too, through the engine's error hook."""
    with pytest.raises(DatabaseUnavailable, match="locked"):
        async with locked_database.write() as conn:
            await conn.execute(insert(organizations), ROW)
