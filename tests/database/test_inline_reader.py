"""The inline SQLite read that lets replays skip the write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import insert, select

from retrysafe.database import Database
from retrysafe.database.schema import organizations
from retrysafe.database.sqlite_driver import BUSY
from retrysafe.idempotency.decisions import Execute, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.sql import SqlIdempotencyStore

CREATED = StoredResponse(201, b'{"data":{}}', "application/json", "/api/v1/accounts/1")


def _org(number: int) -> dict[str, str]:
    return {"id": f"org_{number}", "name": f"org {number}", "created_at": "2026-11-25T00:00:00Z"}


async def test_each_inline_read_sees_the_latest_commit(sqlite_database: Database) -> None:
    """No read transaction is left open between reads, so no snapshot goes stale."""
    lookup = sqlite_database.prepare(
        select(organizations.c.name).where(organizations.c.id == "org_1")
    )
    assert lookup.first_now({}) is None
    async with sqlite_database.write() as conn:
        await conn.execute(insert(organizations), _org(1))
    assert lookup.first_now({}) == ("org 1",)
    async with sqlite_database.write() as conn:
        await conn.execute(organizations.update().values(name="renamed"))
    assert lookup.first_now({}) == ("renamed",)


async def test_a_replay_does_not_wait_for_the_write_lock(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """With another process holding SQLite's write lock, a completed key still replays."""
    store = SqlIdempotencyStore(sqlite_database)
    key = RecordKey("org_a", "k")
    async with store.attempt(key, "fp", now=1000, ttl=3600) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.complete(CREATED)
    other = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with store.attempt(key, "fp", now=1001, ttl=3600) as decision:
            assert decision == Replay(CREATED)
    finally:
        other.rollback()
        other.close()


async def test_without_a_file_the_inline_read_steps_aside(tmp_path: Path) -> None:
    """A read that cannot run at once answers BUSY, and the caller takes its usual path."""
    db = Database(f"sqlite:///{tmp_path / 'missing' / 'none.db'}")
    try:
        assert db.prepare(select(organizations.c.id)).first_now({}) is BUSY
    finally:
        await db.dispose()
