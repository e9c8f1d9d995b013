"""Throwaway PostgreSQL databases on the local server, for the suites that run there."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import pytest
from tests.support.sync import run_sync

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SKIP_REASON = "PostgreSQL is not reachable on 127.0.0.1:5432"


def url_of(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


async def reachable() -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(ADMIN_URL), timeout=3)
    except Exception:  # any failure to connect means there is no usable server
        return False
    await conn.close()
    return True


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(template: str | None = None) -> str:
    """A new database (a copy of ``template`` when given); returns its name."""
    name = "retrysafe_test_" + uuid.uuid4().hex[:12]
    copy = f' TEMPLATE "{template}"' if template else ""
    await admin(f'CREATE DATABASE "{name}"{copy}')
    return name


async def drop_database(name: str) -> None:
    # Servers under test may still hold pooled connections; FORCE ends them.
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def new_database(template: str | None = None) -> AsyncIterator[str]:
    """The URL of a new database (a copy of ``template`` when given), dropped afterwards.

    The calling test skips when no PostgreSQL server is reachable.
    """
    if not await reachable():
        pytest.skip(SKIP_REASON)
    name = await create_database(template)
    try:
        yield url_of(name)
    finally:
        await drop_database(name)


@contextmanager
def new_database_sync(template: str | None = None) -> Iterator[str]:
    """:func:`new_database` for synchronous code (fixtures, sync tests), on a thread of its own."""
    if not run_sync(reachable):
        pytest.skip(SKIP_REASON)
    name = run_sync(lambda: create_database(template))
    try:
        yield url_of(name)
    finally:
        run_sync(lambda: drop_database(name))


class Copies:
    """New copies of ``template``, made ahead of the tests, and dropped behind them.

    ``CREATE DATABASE`` takes 0.2 to 0.5 s on the shared server and ``DROP DATABASE``
    about as long under load; a suite that gives every test its own copy waits for
    neither: ``AHEAD`` copies are being made while tests run, and a used copy is
    dropped on another thread while the next test runs. Every copy is still new and
    used by one test only.
    """

    AHEAD = 2
    """Copies made ahead: a test is often shorter than one ``CREATE DATABASE``."""

    def __init__(self, template: str) -> None:
        self._template = template
        self._maker = ThreadPoolExecutor(max_workers=self.AHEAD, thread_name_prefix="pg-copies")
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drops")
        self._ahead: deque[Future[str]] = deque(
            self._maker.submit(self._make) for _ in range(self.AHEAD)
        )
        self._drops: list[Future[None]] = []

    def _make(self) -> str:
        return asyncio.run(create_database(self._template))

    def take(self) -> str:
        """The name of a new copy (the caller hands it to :meth:`drop`); the next one started."""
        name = self._ahead.popleft().result()
        self._ahead.append(self._maker.submit(self._make))
        return name

    def drop(self, name: str) -> None:
        """Drop the copy ``name`` on another thread; :meth:`close` waits for it."""
        self._drops.append(self._dropper.submit(asyncio.run, drop_database(name)))

    def close(self) -> None:
        """Drop the copies made ahead and wait for every drop; call before dropping the template."""
        for future in self._ahead:
            self.drop(future.result())
        self._maker.shutdown()
        self._dropper.shutdown()
        for drop in self._drops:
            drop.result()  # a failed drop fails the session's teardown
