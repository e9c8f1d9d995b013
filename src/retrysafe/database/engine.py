"""One database per process: its connections, the SQLite writer, and the request's transaction.

The idempotency layer makes a *request transaction* ambient while the handler
runs; handlers that ask for :meth:`Database.write` (or :meth:`Database.read`)
inside it join that transaction instead of opening their own, so their writes and
the recorded response commit together (SPEC §3). Handlers whose writes are plain
inserts can use :meth:`Database.writes` instead: there the inserts may wait, and
commit with the record in one statement or one group commit (see
:mod:`retrysafe.stores.sql`).

On SQLite every write of the process goes through one connection
(:class:`~retrysafe.database.sqlite_writer.SqliteWriter`), and reads through a
small pool of reader connections, or inline on the loop for point lookups.

A handler with an effect outside the database (an upstream call) commits a phase
at a recovery point and makes the call holding no transaction and, on SQLite, not
the writer; its next ``read``/``write`` opens the request transaction again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar, Token
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import asyncpg
from sqlalchemy import Column, Table, bindparam, event, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from retrysafe.database import sqlite_driver
from retrysafe.database.fair_gate import FairGate, Held
from retrysafe.database.sqlite_driver import BUSY, Busy, is_busy
from retrysafe.database.sqlite_writer import SqliteWriter
from retrysafe.database.unavailable import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Prepared",
    "PreparedInsert",
    "RequestTransaction",
    "Writes",
    "async_url",
]

_ambient: ContextVar[RequestTransaction | None] = ContextVar("retrysafe_request_tx", default=None)

SQLITE_READERS = 4
"""SQLite reader connections kept open per process, each with its thread.

Point lookups (API keys, idempotency records) do not use them (they run inline),
so these serve only the list and detail reads; more would be more threads taking
turns at the GIL, not more reads per second.
"""
SQLITE_READER_OVERFLOW = 4
"""Reader connections opened (and closed again) past :data:`SQLITE_READERS` under bursts."""


def async_url(url: str) -> str:
    """Map the driver-less URLs users type to the async drivers we ship."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


class RequestTransaction(Protocol):
    """The transaction of one request, made ambient by the idempotency store.

    It may not be open yet: a store that defers its claim opens it on the first
    :meth:`connection`, and until then keeps the request's inserts for its commit.
    """

    async def connection(self) -> AsyncConnection:
        """The request's open transaction, opened (and the key claimed) if it is not yet."""
        ...

    async def insert(
        self,
        statement: PreparedInsert,
        row: Mapping[str, Any],
        conflict: Callable[[], BaseException] | None,
    ) -> None:
        """Insert ``row`` now or at the commit; see :meth:`Writes.insert`."""
        ...


class Database:
    """Connections for reads and for writes; on SQLite one writer per process."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 10.0,
        sqlite_synchronous: str = sqlite_driver.SYNCHRONOUS[0],
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.sqlite_synchronous = sqlite_synchronous
        self.writer: SqliteWriter | None = None
        self.sqlite_path: str | None = None
        """The SQLite file (``:memory:`` for none); None on PostgreSQL."""
        self._write_engine: AsyncEngine | None = None
        self._inline: sqlite_driver.InlineReader | None = None
        self._gate: FairGate | None = None
        if self.is_sqlite:
            if sqlite_synchronous not in sqlite_driver.SYNCHRONOUS:
                choices = ", ".join(sqlite_driver.SYNCHRONOUS)
                raise ValueError(
                    f"sqlite_synchronous must be one of {choices}, got {sqlite_synchronous!r}"
                )
            path = url.split("///", 1)[1] if "///" in url else ":memory:"
            self.sqlite_path = path
            self.engine: AsyncEngine = create_async_engine(
                async_url(url),
                async_creator=partial(sqlite_driver.connect, path, sqlite_synchronous),
                pool_size=SQLITE_READERS,
                max_overflow=SQLITE_READER_OVERFLOW,
            )
            self.writer = SqliteWriter(
                partial(sqlite_driver.connect_writer, path, sqlite_synchronous)
            )
            # SQLAlchemy's view of the writer's one connection, for the transactions that
            # handlers run statement by statement; the writer's turns keep its users apart.
            self._write_engine = create_async_engine(
                async_url(url), async_creator=self.writer.connection, poolclass=StaticPool
            )
            event.listen(self._write_engine.sync_engine, "handle_error", _disconnect_is_unavailable)
            self._inline = sqlite_driver.InlineReader(path)
        else:
            # No overflow: pool_size is then the most this process ever opens, so
            # processes x pool_size bounds what the server must allow. No pre-ping:
            # it cost three round trips per checkout (BEGIN, a ping, ROLLBACK). A
            # connection the server dropped fails its first statement instead, which
            # is a 503 and invalidates the pool (see _disconnect_is_unavailable).
            self.engine = create_async_engine(
                async_url(url),
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=pool_timeout,
            )
            # Every checkout of this pool takes its turn here first: see fair_gate.
            self._gate = FairGate(pool_size, pool_timeout)
        event.listen(self.engine.sync_engine, "handle_error", _disconnect_is_unavailable)

    async def dispose(self) -> None:
        if self._inline is not None:
            self._inline.close()
        if self.writer is not None:
            await self.writer.close()
        if self._write_engine is not None:
            await self._write_engine.dispose()
        await self.engine.dispose()

    def prepare(self, statement: Executable) -> Prepared:
        """Compile ``statement`` once for this database; see :class:`Prepared`."""
        return Prepared(self, statement)

    def prepare_insert(
        self, table: Table, *, unless: tuple[Column[Any], ...] = ()
    ) -> PreparedInsert:
        """An insert into ``table`` that :meth:`Writes.insert` may defer (a PreparedInsert)."""
        return PreparedInsert(self, table, unless)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; inside a request transaction, that transaction."""
        current = _ambient.get()
        if current is not None:
            yield await current.connection()
            return
        async with self._pooled() as conn:
            yield conn

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the pool (SQLite: a reader), in arrival order on PostgreSQL."""
        if self._gate is None:
            async with _connect(self.engine) as conn:
                yield conn
            return
        async with self._gate.held(), _connect(self.engine) as conn:
            yield conn

    def raw(self) -> RawCheckout:
        """PostgreSQL: a pooled connection, used straight on asyncpg (``asyncpg.Connection``).

        For single statements on the hot path, outside SQLAlchemy's transaction
        handling: each runs in its own implicit transaction, in one round trip,
        prepared once per connection by asyncpg. The connection is one of the pool's,
        so ``pool_size`` still bounds what the process opens. A lost connection is a
        :class:`DatabaseUnavailable` and is not given back to the pool.
        """
        if self._gate is None:
            raise TypeError("raw() is for PostgreSQL; SQLite has no pool of asyncpg connections")
        return RawCheckout(self, self._gate)

    @asynccontextmanager
    async def _checked_out(self) -> AsyncIterator[Any]:
        """SQLAlchemy's own checkout of a raw connection, for when none is idle to be lent."""
        try:
            proxied = await self.engine.raw_connection()
        except Exception as exc:
            # Connecting failed (the driver's own error, unwrapped on this path), or the
            # pool stayed exhausted: nothing ran.
            raise DatabaseUnavailable(str(exc)) from exc
        healthy = False
        try:
            yield proxied.driver_connection
            healthy = True
        except asyncpg.PostgresError as exc:
            healthy = not isinstance(exc, _PG_SERVER_GOING)
            # The server answered: the statement failed, the connection is fine,
            # unless the server is going away (connection exceptions, shutdown).
            if isinstance(exc, _PG_SERVER_GOING):
                self.engine.sync_engine.pool._invalidate_time = time.time()
                proxied.invalidate(exc)
                raise DatabaseUnavailable(str(exc)) from exc
            raise
        except _PG_CLIENT_FAILURES as exc:
            # The socket, the protocol, a state left by an interrupted statement: the
            # connection is unusable, and no statement of ours is known to have run.
            self.engine.sync_engine.pool._invalidate_time = time.time()
            proxied.invalidate(exc)
            raise DatabaseUnavailable(str(exc)) from exc
        except BaseException as exc:
            # Cancelled mid-statement: asyncpg may still be talking to the server.
            proxied.invalidate(exc)
            raise
        finally:
            if healthy:
                # Checked in without a hop into a greenlet: no SQLAlchemy transaction was
                # begun on it, so the pool's reset has nothing to await.
                proxied.close()
            else:
                await greenlet_spawn(proxied.close)

    async def first_committed(
        self, statement: Prepared, parameters: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of a point lookup outside any transaction, by the cheapest way there is.

        On SQLite inline on the loop (a reader connection when that cannot run at
        once); on PostgreSQL one statement straight on asyncpg.
        """
        if self.is_sqlite:
            row = statement.first_now(parameters)
            if row is not BUSY:
                return row
            async with self.read_committed() as conn:
                return await statement.first(conn, parameters)
        async with self.raw() as conn:
            found = await conn.fetchrow(statement.sql, *statement.values(parameters))
            return None if found is None else tuple(found)

    @asynccontextmanager
    async def read_committed(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads outside any request transaction: it sees what is committed.

        For a handler's reads that need not see its own writes nor be atomic with
        them (checking that a parent row exists before a long upload, say): they do
        not open the request transaction, so on SQLite they do not hold the writer.
        """
        async with self._pooled() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction committed on exit; joins the request transaction if there is one."""
        current = _ambient.get()
        if current is not None:
            yield await current.connection()
            return
        async with self.transaction() as conn:
            yield conn
            await conn.commit()

    def writes(self) -> Writes:
        """Inserts that may wait for the commit, in an ``async with``: see :class:`Writes`.

        Inside a request transaction they belong to it. Outside one they are one
        unit of their own, written (on SQLite in the next group commit) when the
        block ends, and a conflict is raised then, from the ``async with``.
        """
        return Writes(self, _ambient.get())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """An open write transaction the caller commits; rolled back if it does not.

        On SQLite it holds the process's writer for as long as it is open.
        """
        if self.writer is None or self._write_engine is None:
            async with self._pooled() as conn:
                try:
                    await _guard(conn.begin())
                    yield conn
                finally:
                    if conn.in_transaction():
                        await conn.rollback()
            return
        async with self.writer.turn() as driver, _connect(self._write_engine) as conn:
            try:
                await _guard_sqlite(driver.begin_immediate())
                await conn.begin()  # SQLAlchemy's bookkeeping: the BEGIN above is the real one
                yield conn
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    async def insert_many(
        self, statement: PreparedInsert, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert ``rows`` (values in ``columns``' order) in one transaction of their own.

        Never part of a request transaction: for background batches (the API log).
        On SQLite a unit of a group commit; on PostgreSQL one ``COPY``, which costs
        the server about half of what the same rows cost as prepared inserts.
        """
        if not rows:
            return
        if self.writer is not None:
            sql = statement.positional(columns).sql
            try:
                await self.writer.run(partial(_execute_many, sql, rows))
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise DatabaseUnavailable(str(exc)) from exc
                raise
            return
        async with self.raw() as conn:
            await conn.copy_records_to_table(statement.table.name, records=rows, columns=columns)

    @contextmanager
    def joined(self, transaction: RequestTransaction) -> Iterator[None]:
        """Make ``transaction`` the one every ``read``/``write``/``writes`` below joins."""
        token = self.join(transaction)
        try:
            yield
        finally:
            self.leave(token)

    def join(self, transaction: RequestTransaction) -> Token[RequestTransaction | None]:
        """:meth:`joined` as two calls, for a context manager written as a class."""
        return _ambient.set(transaction)

    def leave(self, token: Token[RequestTransaction | None]) -> None:
        """End what :meth:`join` began."""
        _ambient.reset(token)

    async def _write_unit(self, queued: list[QueuedInsert]) -> None:
        """Commit ``queued`` on its own: a unit of a group on SQLite, a transaction elsewhere."""
        if self.writer is not None:
            try:
                await self.writer.run(partial(_insert_all, queued))
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise DatabaseUnavailable(str(exc)) from exc
                raise
            except InsertConflict as conflict:
                raise conflict.error() from None
            return
        async with self.raw() as conn:
            if len(queued) == 1:  # one statement is atomic on its own: one round trip
                conflicted = await _pg_insert(conn, queued[0])
            else:
                async with conn.transaction():
                    for each in queued:
                        conflicted = await _pg_insert(conn, each)
                        if conflicted is not None:
                            raise conflicted
        if conflicted is not None:
            raise conflicted


QueuedInsert = tuple["PreparedInsert", Mapping[str, Any], "Callable[[], BaseException] | None"]


class InsertConflict(Exception):
    """A deferred insert met a row with its unique key: its unit rolls back."""

    def __init__(self, on_conflict: Callable[[], BaseException] | None) -> None:
        super().__init__("a deferred insert conflicted with an existing row")
        self._on_conflict = on_conflict

    def error(self) -> BaseException:
        """What the handler asked to raise for the conflict (this, when it asked for nothing)."""
        return self._on_conflict() if self._on_conflict is not None else self


async def _pg_insert(conn: Any, queued: QueuedInsert) -> BaseException | None:
    """Run one queued insert on asyncpg; what to raise when its unique key was taken."""
    insert, row, on_conflict = queued
    prepared = insert.prepared_for(row)
    rows = await conn.fetch(prepared.sql, *prepared.values(row))
    if rows or not insert.reports_conflict:
        return None
    return InsertConflict(on_conflict).error()


def _execute_many(sql: str, batch: list[tuple[Any, ...]], raw: sqlite3.Connection) -> None:
    raw.executemany(sql, batch)


def _insert_all(queued: list[QueuedInsert], raw: sqlite3.Connection) -> None:
    """Run ``queued`` inline on the writer's connection; raise on the first conflict."""
    for insert, row, on_conflict in queued:
        prepared = insert.prepared_for(row)
        rows = raw.execute(prepared.sql, prepared.values(row)).fetchall()
        if insert.reports_conflict and not rows:
            raise InsertConflict(on_conflict)


class Writes:
    """The inserts of a handler, which may be written at the commit instead of at once.

    ``insert`` returns without a result, so the handler cannot depend on when the
    row is written: under an idempotency key whose claim is deferred, rows wait for
    the response and commit with the record; elsewhere they are written now (in an
    open request transaction) or when the ``writes()`` block ends.
    """

    __slots__ = ("_db", "_transaction", "queued")

    def __init__(self, db: Database, transaction: RequestTransaction | None) -> None:
        self._db = db
        self._transaction = transaction
        self.queued: list[QueuedInsert] = []

    # Its own context manager rather than a generator's: one per create.
    async def __aenter__(self) -> Writes:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_exc: object) -> None:
        if kind is None and self._transaction is None and self.queued:
            await self._db._write_unit(self.queued)

    async def insert(
        self,
        statement: PreparedInsert,
        row: Mapping[str, Any],
        *,
        conflict: Callable[[], BaseException] | None = None,
    ) -> None:
        """Insert ``row`` with ``statement``; ``conflict()`` is raised if its unique key is taken.

        With ``unless`` columns (see :meth:`Database.prepare_insert`) a conflicting row
        is not inserted, and ``conflict`` (if given) says what to raise instead:
        where the insert waits for the commit, the request is run again in the mode
        that writes at once, and then the handler raises it (see
        :mod:`retrysafe.stores.sql`).
        """
        if self._transaction is not None:
            await self._transaction.insert(statement, row, conflict)
        else:
            self.queued.append((statement, row, conflict))


class PreparedInsert:
    """An insert of one row into ``table``, compiled once per set of columns rows give.

    Columns a row leaves out get their defaults, as with ``table.insert()``. With
    ``unless`` it is ``INSERT … ON CONFLICT (unless) DO NOTHING RETURNING 1``: a row
    comes back only when it was inserted, so a conflict is seen without an error
    (which would abort a PostgreSQL transaction).
    """

    def __init__(self, db: Database, table: Table, unless: tuple[Column[Any], ...]) -> None:
        self.table = table
        self.unless = tuple(column.name for column in unless)
        self.reports_conflict = bool(unless)
        self._db = db
        self._compiled: dict[tuple[str, ...], Prepared] = {}

    def positional(self, columns: tuple[str, ...]) -> Prepared:
        """The statement for rows given as values in ``columns``' order."""
        prepared = self.prepared_for(dict.fromkeys(columns))
        if prepared.order != columns:  # SQLAlchemy binds the values in the order given
            raise ValueError(f"{self.table.name}: bound as {prepared.order}, not {columns}")
        return prepared

    def prepared_for(self, row: Mapping[str, Any]) -> Prepared:
        """The statement for a row with exactly ``row``'s columns."""
        columns = tuple(row)
        prepared = self._compiled.get(columns)
        if prepared is None:
            insert = sqlite.insert if self._db.is_sqlite else postgresql.insert
            statement: Any = insert(self.table).values({name: bindparam(name) for name in columns})
            if self.unless:
                statement = statement.on_conflict_do_nothing(
                    index_elements=list(self.unless)
                ).returning(literal_column("1"))
            prepared = self._compiled[columns] = self._db.prepare(statement)
        return prepared


class Prepared:
    """A Core statement compiled once, run with as little machinery as the driver allows.

    On SQLite it goes straight to the one-hop driver: no execution context, no
    result objects, one trip to a reader's thread, or none on the writer. That is
    most of what a statement costs on the hot path (about 90 µs of CPU each through
    SQLAlchemy's execute here). On other databases it runs through SQLAlchemy as
    usual. Rows come back as plain tuples in the statement's column order either way.
    """

    def __init__(self, db: Database, statement: Executable) -> None:
        self.statement = statement
        self._db = db
        self._fast = db.is_sqlite
        compiled = cast(
            SQLCompiler,
            cast(ClauseElement, statement).compile(
                dialect=db.engine.dialect if db.is_sqlite else _PG_DIALECT
            ),
        )
        self.sql = compiled.string
        self.order = tuple(compiled.positiontup or ())
        # Values written into the statement itself (status="completed") are bind
        # parameters too; their values live in the compiled defaults.
        self._defaults = dict(compiled.params)

    def values(self, parameters: Mapping[str, Any]) -> list[Any]:
        """``parameters`` in the compiled statement's positional order."""
        defaults = self._defaults
        return [parameters[name] if name in parameters else defaults[name] for name in self.order]

    async def rows(
        self, conn: AsyncConnection, parameters: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        driver = _one_hop_driver(conn) if self._fast else None
        if driver is None:
            result = await conn.execute(self.statement, parameters)
            return [tuple(row) for row in result.all()] if result.returns_rows else []
        try:
            return await driver.run(self.sql, self.values(parameters))
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
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
        return reader.first(self.sql, self.values(parameters))


_PG_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


_PG_SERVER_GOING: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # the server shutting down or starting up
)

_PG_CLIENT_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def _idle_record(engine: AsyncEngine) -> Any:
    """An idle, healthy connection record of ``engine``'s pool, taken off its queue; or None.

    SQLAlchemy's checkout and check-in (a greenlet switch, the fairy, the reset on
    return) cost about as much CPU as the statement they wrap. A connection that sits
    idle in the pool, was opened after the pool's last invalidation and is not being
    recycled can be lent as it is and put back the same way; anything else (none
    idle, one to reconnect) takes SQLAlchemy's own checkout.
    """
    pool: Any = engine.sync_engine.pool
    queue = getattr(pool, "_pool", None)
    if queue is None or getattr(pool, "_recycle", -1) >= 0:
        return None
    try:
        record = queue.get_nowait()
    except Exception:  # empty (the queue raises its own Empty)
        return None
    if (
        record.dbapi_connection is None
        or record.starttime < pool._invalidate_time
        or record._soft_invalidate_time > record.starttime
    ):
        queue.put_nowait(record)  # for SQLAlchemy's checkout to reconnect as it does
        return None
    return record


class RawCheckout:
    """What ``Database.raw()`` gives: the gate's permit, then a pooled asyncpg connection.

    A class rather than generator-based context managers: this runs twice per create
    on PostgreSQL, and the three nested generators (the gate, the checkout, the
    lending) cost 6.5 µs of CPU a checkout where this costs about 1. A connection
    idle in the pool is lent as it is and put back the same way (see
    :func:`_idle_record`); otherwise SQLAlchemy checks one out
    (``Database._checked_out``).
    """

    __slots__ = ("_db", "_gate", "_held", "_record", "_slow")

    def __init__(self, db: Database, gate: FairGate) -> None:
        self._db = db
        self._gate = gate
        self._held: Held | None = None
        self._record: Any = None
        self._slow: Any = None

    async def __aenter__(self) -> Any:
        self._held = await self._gate.enter()
        try:
            record = _idle_record(self._db.engine)
            if record is not None:
                self._record = record
                return record.dbapi_connection.driver_connection
            self._slow = self._db._checked_out()
            return await self._slow.__aenter__()
        except BaseException:
            self._gate.exit(self._held)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool | None:
        try:
            if self._slow is not None:
                return cast("bool | None", await self._slow.__aexit__(kind, exc, tb))
            await _give_back(self._db.engine, self._record, exc)
            return None
        finally:
            self._gate.exit(self._held)


async def _give_back(engine: AsyncEngine, record: Any, exc: BaseException | None) -> None:
    """Put a lent ``record`` back on the pool's queue, invalidated first if ``exc`` broke it.

    A statement the server refused leaves the connection fine; the server going
    away, the socket or the protocol failing make it (and, for the first, every
    connection opened before it) unusable: a :class:`DatabaseUnavailable` then.
    Cancelled mid-statement, asyncpg may still be talking to the server: closed.
    """
    pool: Any = engine.sync_engine.pool
    try:
        if exc is None:
            return
        if isinstance(exc, asyncpg.PostgresError):
            if isinstance(exc, _PG_SERVER_GOING):
                await _invalidate_all(pool, record, exc)
                raise DatabaseUnavailable(str(exc)) from exc
            return
        if isinstance(exc, _PG_CLIENT_FAILURES):
            await _invalidate_all(pool, record, exc)
            raise DatabaseUnavailable(str(exc)) from exc
        await asyncio.shield(greenlet_spawn(record.invalidate, exc))
    finally:
        pool._pool.put_nowait(record)


async def _invalidate_all(pool: Any, record: Any, exc: BaseException) -> None:
    """Close ``record``'s connection and mark every connection opened before it as stale.

    A connection lost is most often the server gone or restarted: the others are lost
    too, and SQLAlchemy reconnects each at its next checkout instead of failing it.
    """
    pool._invalidate_time = time.time()
    await greenlet_spawn(record.invalidate, exc)


@asynccontextmanager
async def _connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    try:
        conn = await engine.connect()
    except (OSError, DBAPIError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    except PoolTimeout as exc:
        # Every pooled connection stayed busy for pool_timeout: nothing ran, so a
        # 503 the client retries with the same key, not a 500.
        raise DatabaseUnavailable(str(exc)) from exc
    try:
        yield conn
    finally:
        await conn.close()


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

    A statement interrupted by a cancellation (the request's deadline) is flagged
    as a disconnect too, but it is not one: the cancellation goes on unchanged, so
    the deadline layer answers its 504 rather than a 503.
    """
    if not isinstance(context.original_exception, Exception):
        return None  # CancelledError, KeyboardInterrupt: not a database failure
    if context.is_disconnect or is_busy(context.original_exception):
        return DatabaseUnavailable(str(context.original_exception))
    return None


async def _guard(awaitable: Any) -> Any:
    """Turn connection-level failures into :class:`DatabaseUnavailable` (503, not 500)."""
    try:
        return await awaitable
    except (OSError, OperationalError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc


async def _guard_sqlite(awaitable: Any) -> Any:
    """The same for a call straight on the sqlite3 driver (a ``BEGIN IMMEDIATE``)."""
    try:
        return await awaitable
    except (OSError, sqlite3.OperationalError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc
