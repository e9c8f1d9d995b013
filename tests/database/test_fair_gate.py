"""The PostgreSQL pool's gate: connections handed out in arrival order, never to a later request."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from tests.support import postgres

from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.database.fair_gate import FairGate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_permit_given_back_goes_to_the_longest_waiter_not_to_a_newcomer() -> None:
    gate = FairGate(1, timeout=5)
    order: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def user(name: str) -> None:
        async with gate.held():
            order.append(name)

    async def first() -> None:
        async with gate.held():
            order.append("first")
            await _settle()  # the waiter queues meanwhile
            assert gate.waiting == 1
            # Scheduled before the permit is given back, so it runs before the waiter
            # wakes: with asyncio.Queue's get_nowait it would take the connection.
            tasks.append(_elsewhere(user("newcomer")))

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(user("waiter"))
    await holder
    await asyncio.gather(waiter, *tasks)
    assert order == ["first", "waiter", "newcomer"]


async def test_no_permit_within_the_timeout_is_a_503_and_the_permit_is_not_lost() -> None:
    gate = FairGate(1, timeout=0.05)
    release = asyncio.Event()
    holder = asyncio.create_task(_enter(gate, until=release))
    await _settle()
    with pytest.raises(DatabaseUnavailable, match="came free within"):
        await _enter(gate)
    assert gate.waiting == 0
    release.set()
    await holder
    await asyncio.wait_for(_enter(gate), 1)  # the permit came back


async def test_a_cancelled_waiter_gives_up_its_place_and_passes_on_a_permit_handed_to_it() -> None:
    gate = FairGate(1, timeout=5)
    release = asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}

    async def holder() -> None:
        async with gate.held():
            await release.wait()
        # The permit went to "cancelled", which has not run since.
        tasks["cancelled"].cancel()

    held = asyncio.create_task(holder())
    await _settle()
    tasks["cancelled"] = asyncio.create_task(_enter(gate))
    tasks["behind"] = asyncio.create_task(_enter(gate))
    await _settle()
    assert gate.waiting == 2
    release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await tasks["cancelled"]
    await asyncio.wait_for(tasks["behind"], 1)  # it passed the permit on
    await asyncio.wait_for(_enter(gate), 1)
    assert gate.waiting == 0


async def test_a_request_holding_a_permit_is_not_queued_behind_newcomers() -> None:
    """A lookup inside an open transaction must not wait for a permit it blocks itself."""
    gate = FairGate(1, timeout=0.2)

    async def nested() -> str:
        async with gate.held():
            await _settle()
            async with gate.held():  # would time out if it queued for the one permit
                return "nested"

    assert await asyncio.create_task(nested()) == "nested"
    await asyncio.wait_for(_enter(gate), 1)


def _elsewhere(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task in a context of its own: another request, not one the caller holds for."""
    return asyncio.create_task(coroutine, context=contextvars.Context())


async def _enter(gate: FairGate, until: asyncio.Event | None = None) -> None:
    async with gate.held():
        if until is not None:
            await until.wait()


@pytest.fixture
async def small_pool() -> AsyncIterator[Database]:
    if not await postgres.reachable():
        pytest.skip(postgres.SKIP_REASON)
    async with postgres.new_database() as url:
        db = Database(url, pool_size=1)
        try:
            yield db
        finally:
            await db.dispose()


async def test_a_connection_given_back_goes_to_the_waiting_statement_not_to_a_newcomer(
    small_pool: Database,
) -> None:
    """A pool of one: the statement that waited runs before one that arrived later."""
    started: list[str] = []
    later: list[asyncio.Task[None]] = []

    async def statement(name: str) -> None:
        async with small_pool.raw() as conn:
            started.append(name)
            await conn.execute("SELECT 1")

    async def holder() -> None:
        async with small_pool.raw() as conn:
            await conn.execute("SELECT 1")
            started.append("holder")
            await _settle()  # the waiter queues meanwhile
            # Runs before the waiter wakes: SQLAlchemy's queue would hand it the connection.
            later.append(_elsewhere(statement("newcomer")))

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(statement("waiter"))
    await first
    await asyncio.gather(waiter, *later)
    assert started == ["holder", "waiter", "newcomer"]
