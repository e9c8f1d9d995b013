"""``Database.raw()`` on PostgreSQL: what becomes of the lent connection when a statement fails.

A pool of one connection, so every checkout gets the same one back unless it
was closed, and a permit or a connection not given back would block the next
checkout (into the pool timeout's 503) instead of passing unnoticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from tests.support import postgres

from retrysafe.database import Database, DatabaseUnavailable


@pytest.fixture
async def one_connection() -> AsyncIterator[Database]:
    if not await postgres.reachable():
        pytest.skip(postgres.SKIP_REASON)
    async with postgres.new_database() as url:
        db = Database(url, pool_size=1, pool_timeout=5)
        try:
            yield db
        finally:
            await db.dispose()


async def backend_pid(db: Database) -> int:
    async with db.raw() as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        return pid


async def test_a_statement_the_server_refused_leaves_the_connection_in_the_pool(
    one_connection: Database,
) -> None:
    before = await backend_pid(one_connection)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with one_connection.raw() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert await backend_pid(one_connection) == before


async def test_a_connection_the_server_closed_is_a_503_and_the_next_checkout_reconnects(
    one_connection: Database,
) -> None:
    before = await backend_pid(one_connection)
    await postgres.admin(f"SELECT pg_terminate_backend({before})")
    with pytest.raises(DatabaseUnavailable):
        async with one_connection.raw() as conn:
            await conn.fetchval("SELECT 1")
    assert await backend_pid(one_connection) != before


async def test_a_statement_cancelled_midway_closes_its_connection(
    one_connection: Database,
) -> None:
    before = await backend_pid(one_connection)
    running = asyncio.Event()

    async def sleeper() -> None:
        async with one_connection.raw() as conn:
            running.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(sleeper())
    await running.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The server may still be running the sleep on the old connection: a new one answers.
    async with asyncio.timeout(10):
        assert await backend_pid(one_connection) != before


async def test_an_error_of_the_callers_own_closes_the_connection_it_held(
    one_connection: Database,
) -> None:
    """Whatever the block was doing on the connection when it raised may be half done."""
    before = await backend_pid(one_connection)

    async def failing() -> None:
        async with one_connection.raw() as conn:
            await conn.fetchval("SELECT 1")
            raise LookupError("the caller's own")

    with pytest.raises(LookupError):
        await failing()
    assert await backend_pid(one_connection) != before
