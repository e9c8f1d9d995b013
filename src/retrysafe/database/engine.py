"""One async engine per process, with the SQLite write discipline and the ambient transaction.

The idempotency layer opens a transaction and makes it *ambient*; handlers that ask
for :meth:`Database.write` inside it join that transaction instead of opening their
own, so their writes and the recorded response commit together (SPEC §3).

A handler with an effect outside the database (an upstream call) commits a phase
at a recovery point and makes the call holding no transaction and, on SQLite, no
write lock; its next ``read``/``write`` opens the ambient transaction again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from retrysafe.database import sqlite_driver
from retrysafe.database.sqlite_driver import BUSY, Busy
from retrysafe.unavailable import StoreUnavailable

_ambient: ContextVar[AmbientTransaction | None] = ContextVar("retrysafe_ambient_tx", default=None)

_IMMEDIATE = "retrysafe_immediate"
SQLITE_POOL_SIZE = 32
"""SQLite connections kept open per process (more are opened, and closed, under bursts)."""


class DatabaseUnavailable(StoreUnavailable):
    """The database could not be reached or stayed locked; the request did not run (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, dependency="database")


def async_url(url: str) -> str:
    """Map the driver-less URLs users type to the async drivers we ship."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front so a transaction never fails half-way on
    # upgrade. Readers begin nothing: in autocommit mode each SELECT is its own
    # consistent snapshot, and skipping BEGIN saves a trip to the driver's thread.
    if conn.get_execution_options().get(_IMMEDIATE, False):
        driver = conn.connection.driver_connection
        if isinstance(driver, sqlite_driver.OneHopConnection):
            driver.begin_immediate()  # sent with the first statement, saving a hop
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Connections for reads and for writes; on SQLite one writer per process at a time."""

    def __init__(self, url: str, *, pool_size: int = 10, pool_timeout: float = 10.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ":memory:"
            kwargs["async_creator"] = partial(sqlite_driver.connect, path)
            # Readers run side by side (WAL) and each connection is a thread of its
            # own: a pool smaller than the requests in flight would open and close
            # a connection (a thread, a file) per request past it, as SQLAlchemy's
            # default of 5 + 10 overflow did under 32 connections of load.
            kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=3 * SQLITE_POOL_SIZE)
        else:
            # No overflow: pool_size is then the most this process ever opens, so
            # processes x pool_size bounds what the server must allow.
            kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        # SQLite has one writer per file; queueing writers in-process on a lock is far
        # cheaper than letting them spin in SQLite's busy handler. Other processes
        # sharing the file still wait through busy_timeout.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._inline = sqlite_driver.InlineReader(path) if self.is_sqlite else None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        event.listen(self.engine.sync_engine, "handle_error", _disconnect_is_unavailable)

    async def dispose(self) -> None:
        if self._inline is not None:
            self._inline.close()
        await self.engine.dispose()

    def prepare(self, statement: Executable) -> Prepared:
        """Compile ``statement`` once for this database; see :class:`Prepared`."""
        return Prepared(self, statement)

    async def execute_and_commit(
        self, conn: AsyncConnection, statement: Prepared, parameters: Mapping[str, Any]
    ) -> None:
        """Run the transaction's last statement and commit, in one trip where the driver can.

        The write lock is held until the commit, so every trip saved here is
        throughput for every writer.
        """
        driver = _one_hop_driver(conn)
        if driver is not None:
            driver.commit_after_next()
        await statement.rows(conn, parameters)
        await conn.commit()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; inside an ambient transaction, that transaction."""
        current = _ambient.get()
        if current is not None:
            yield await current.connection()
            return
        async with self._connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction committed on exit; joins the ambient one if there is one."""
        current = _ambient.get()
        if current is not None:
            yield await current.connection()
            return
        async with self.transaction() as conn:
            yield conn
            await conn.commit()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """An open write transaction the caller commits; rolled back if it does not."""
        async with self._writer_turn(), self._connect(immediate=True) as conn:
            try:
                await _guard(conn.begin())
                yield conn
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    @asynccontextmanager
    async def ambient_transaction(self) -> AsyncIterator[AmbientTransaction]:
        """A transaction, open at once, that every ``read``/``write`` below joins.

        Whatever the holder has not committed when the context ends is rolled back.
        """
        ambient = AmbientTransaction(self)
        await ambient.connection()
        token = _ambient.set(ambient)
        try:
            yield ambient
        finally:
            _ambient.reset(token)
            await ambient.release()

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def _connect(self, *, immediate: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            conn = await self.engine.connect()
        except (OSError, DBAPIError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        except PoolTimeout as exc:
            # Every pooled connection stayed busy for pool_timeout: nothing ran, so a
            # 503 the client retries with the same key, not a 500.
            raise DatabaseUnavailable(str(exc)) from exc
        try:
            if immediate and self.is_sqlite:
                await conn.execution_options(**{_IMMEDIATE: True})
            yield conn
        finally:
            await conn.close()


class AmbientTransaction:
    """The one write transaction of a request, which may be ended and begun again.

    Normally it is opened once and committed once, with the idempotency record. A
    recovery point commits it and calls :meth:`release`, giving back the connection
    and (on SQLite) the write lock, so an upstream call holds neither; the next
    :meth:`connection` opens a new transaction, which the rest of the request joins.
    """

    __slots__ = ("_conn", "_db", "_scope")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._scope: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._conn: AsyncConnection | None = None

    async def connection(self) -> AsyncConnection:
        """The open transaction's connection, beginning a transaction when none is open."""
        conn = self._conn
        if conn is None:
            # Entered by hand rather than with ``async with``: the transaction has to
            # outlive this call, until the holder commits and releases it.
            scope = self._db.transaction()
            conn = await scope.__aenter__()
            self._scope, self._conn = scope, conn
        return conn

    async def restart(self) -> AsyncConnection:
        """Roll back what the open transaction did and begin a new one on its connection.

        The connection and the write lock stay held, so nothing is queued behind twice.
        """
        conn = self._conn
        if conn is None:
            return await self.connection()
        await conn.rollback()
        await _guard(conn.begin())
        return conn

    async def release(self) -> None:
        """End the transaction, rolling back what was not committed, and give back its
        connection and write lock; a no-op when none is open."""
        scope = self._scope
        if scope is None:
            return
        self._scope = self._conn = None
        await scope.__aexit__(None, None, None)


class Prepared:
    """A Core statement compiled once, run with as little machinery as the driver allows.

    On SQLite it goes straight to the one-hop driver: no execution context, no
    result objects, one trip to the driver's thread. That is most of what a
    statement costs on the hot path (about 90 µs of CPU each through SQLAlchemy's
    execute here). On other databases it runs through SQLAlchemy as usual. Rows
    come back as plain tuples in the statement's column order either way.
    """

    def __init__(self, db: Database, statement: Executable) -> None:
        self.statement = statement
        self._db = db
        self._fast = db.is_sqlite
        if self._fast:
            compiled = cast(
                SQLCompiler, cast(ClauseElement, statement).compile(dialect=db.engine.dialect)
            )
            self._sql = compiled.string
            self._order = tuple(compiled.positiontup or ())
            # Values written into the statement itself (status="completed") are
            # bind parameters too; their values live in the compiled defaults.
            self._defaults = dict(compiled.params)

    async def rows(
        self, conn: AsyncConnection, parameters: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        driver = _one_hop_driver(conn) if self._fast else None
        if driver is None:
            result = await conn.execute(self.statement, parameters)
            return [tuple(row) for row in result.all()] if result.returns_rows else []
        defaults = self._defaults
        values = [
            parameters[name] if name in parameters else defaults[name] for name in self._order
        ]
        try:
            return await driver.run(self._sql, values)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise DatabaseUnavailable(str(exc)) from exc
            raise

    async def first(
        self, conn: AsyncConnection, parameters: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        rows = await self.rows(conn, parameters)
        return rows[0] if rows else None

    def first_now(self, parameters: Mapping[str, Any]) -> tuple[Any, ...] | Busy | None:
        """The first row of a read, on the event loop itself, without waiting for anything.

        SQLite only (see :class:`~retrysafe.database.sqlite_driver.InlineReader`);
        :data:`BUSY` when the read could not run at once (or on another database),
        in which case the caller takes its usual path.
        """
        reader = self._db._inline
        if reader is None:
            return BUSY
        defaults = self._defaults
        values = [
            parameters[name] if name in parameters else defaults[name] for name in self._order
        ]
        return reader.first(self._sql, values)


def _one_hop_driver(conn: AsyncConnection) -> sqlite_driver.OneHopConnection | None:
    # The connection is checked out already, so reaching its driver needs no I/O.
    driver = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
    return driver if isinstance(driver, sqlite_driver.OneHopConnection) else None


def _disconnect_is_unavailable(context: ExceptionContext) -> BaseException | None:
    """A connection lost mid-statement (the server died or restarted), or SQLite's write
    lock not granted in time, is a 503, not a 500.

    The transaction did not commit, or (lost during COMMIT) nobody knows: either
    way the client retries with the same key, which executes or replays. SQLAlchemy
    still invalidates the connection, so the pool never hands it out again.
    """
    if context.is_disconnect or _is_busy(context.original_exception):
        return DatabaseUnavailable(str(context.original_exception))
    return None


def _is_busy(exc: BaseException) -> bool:
    """SQLite gave up waiting for another process's write lock (``busy_timeout``).

    The statement did not run and the transaction rolls back, so this is a 503
    that is safe to retry, not a 500.
    """
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        ("database is locked", "database is busy")
    )


async def _guard(awaitable: Any) -> Any:
    """Turn connection-level failures into :class:`DatabaseUnavailable` (503, not 500)."""
    try:
        return await awaitable
    except (OSError, OperationalError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc
