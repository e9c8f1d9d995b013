"""SQLite connections for the event loop: readers one hop per statement, the writer inline.

SQLAlchemy's aiosqlite adapter opens a cursor, executes, fetches and closes it
as four separate hops to the connection's thread, and under load each hop waits
for the event loop to come round again. A reader here crosses once per statement
(execute and fetch together; cursor creation and close are free). The one write
connection of a process (:class:`InlineConnection`) does not cross at all for its
statements, only for what can wait: the COMMIT's fsync and a write lock held by
another process. Point lookups run inline too (:class:`InlineReader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite

SYNCHRONOUS = ("full", "normal")
"""The ``PRAGMA synchronous`` levels ``--sqlite-synchronous`` accepts; the first is the default.

``full`` syncs the write-ahead log at every commit, so an acknowledged write survives
a power cut or an OS crash; ``normal`` syncs only at checkpoints, which a power cut
can undo for the last commits (SQLite documents this), in exchange for one fsync
fewer per commit.
"""

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another process's write lock before "database is locked"."""

BUSY_POLL_FIRST = 0.0005
BUSY_POLL_MAX = 0.004
"""Seconds between the writer's tries of a write lock another process holds (doubling)."""

CONTENTION_MEMORY = 0.1
POLITE_PAUSE = 0.001
"""A writer that waited for another process within CONTENTION_MEMORY seconds pauses this
long before taking the lock again, so that the other process is not starved."""

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
)


def _open(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    if synchronous not in SYNCHRONOUS:
        choices = ", ".join(SYNCHRONOUS)
        raise ValueError(f"synchronous must be one of {choices}, got {synchronous!r}")
    # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE by the
    # writer); pysqlite's implicit BEGIN would start writes DEFERRED.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Switching a new file to WAL takes its lock: another process opening the same new
    # file at that moment (two migrations started at once) waits for it, the writer
    # too, whose own statements then run without a busy timeout (it polls instead).
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    return conn


async def connect(path: str, synchronous: str = SYNCHRONOUS[0]) -> OneHopConnection:
    """A connection for reads, with a thread of its own (the reader pool's)."""
    connection = OneHopConnection(partial(_open, path, synchronous, BUSY_TIMEOUT_MS), 64)
    await connection  # starts the connection's thread and opens the file there
    return connection


async def connect_writer(path: str, synchronous: str = SYNCHRONOUS[0]) -> InlineConnection:
    """The process's one write connection (see :class:`InlineConnection`)."""
    connection = InlineConnection(partial(_open, path, synchronous, 0), 64)
    await connection
    return connection


class OneHopConnection(aiosqlite.Connection):
    """A reader connection: every statement is one hop to the connection's thread."""

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def hop(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` where this connection's statements run (here: its thread)."""
        return await self._execute(function, *args)  # type: ignore[no-untyped-call]

    async def run(self, sql: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Execute ``sql`` and fetch its rows in one hop (the fast path of ``Prepared``)."""
        rows: list[tuple[Any, ...]] = await self.hop(_fetch_all, self._conn, sql, parameters)
        return rows

    async def commit(self) -> None:
        if self._conn.in_transaction:
            await self.hop(self._conn.commit)

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await self.hop(self._conn.rollback)


def _fetch_all(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    cursor = conn.execute(sql, parameters)
    try:
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


class OneHopCursor:
    """The slice of the DB-API cursor SQLAlchemy's async adapter uses."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _run(self, sql: str, parameters: Iterable[Any]) -> None:
        cursor = self._connection._conn.execute(sql, tuple(parameters))
        try:
            self.description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
        finally:
            cursor.close()

    def _run_many(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        cursor = self._connection._conn.executemany(sql, [tuple(p) for p in seq])
        try:
            self.description = None
            self._rows = []
            self.rowcount = cursor.rowcount
        finally:
            cursor.close()

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> OneHopCursor:
        await self._connection.hop(self._run, sql, parameters or ())
        return self

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> OneHopCursor:
        await self._connection.hop(self._run_many, sql, seq)
        return self

    async def fetchall(self) -> Sequence[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = size or self.arraysize
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []


class InlineConnection(OneHopConnection):
    """The write connection: statements run on the event loop, COMMIT on the connection's thread.

    A statement inside a write transaction that already holds SQLite's write lock
    takes microseconds and never waits (WAL: readers do not block the writer), so a
    hop to a thread costs more than the statement, and each hop waits for the busy
    event loop to come round again while the write lock is held. Only what can take
    long goes to the thread: the COMMIT (its fsync with ``synchronous=FULL``, and
    the checkpoint that may follow it).

    The connection never waits inline: its ``busy_timeout`` is 0, and
    :meth:`begin_immediate` tries a lock another process holds again every few
    milliseconds, awaiting in between. Whoever uses it must hold the writer's turn
    (:class:`~retrysafe.database.sqlite_writer.SqliteWriter`): the loop and the
    thread never touch the connection at the same time.
    """

    async def hop(self, function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)

    @property
    def raw(self) -> sqlite3.Connection:
        """The sqlite3 connection, for statements run inline by the writer's turn holder."""
        return self._conn

    async def on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` on the connection's thread: for what may block (fsync, locks).

        A caller cancelled meanwhile still waits for ``function`` to end before the
        cancellation goes on: until then the thread uses the connection, and whoever
        gets the writer next must not.
        """
        running = asyncio.ensure_future(self._execute(function, *args))  # type: ignore[no-untyped-call]
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await running
            raise

    _contended_at = -1.0

    async def begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE``, waiting (without blocking the loop) while another process writes.

        SQLite's own busy handler sleeps in growing steps, up to 100 ms, and a process
        that just committed takes the lock again at once: under two writing processes
        one of them waited seconds. Here the lock is tried again every few
        milliseconds, and a writer that met another one recently pauses a moment
        before taking the lock again, which gives the other its turn. Raises
        ``sqlite3.OperationalError`` ("database is locked") when the lock is not
        granted within :data:`BUSY_TIMEOUT_MS`.
        """
        loop = asyncio.get_running_loop()
        if loop.time() - self._contended_at < CONTENTION_MEMORY:
            await asyncio.sleep(POLITE_PAUSE)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
        pause = BUSY_POLL_FIRST
        while True:
            self._contended_at = loop.time()
            await asyncio.sleep(pause)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or loop.time() >= deadline:
                    raise
            pause = min(pause * 2, BUSY_POLL_MAX)

    async def commit(self) -> None:
        if self._conn.in_transaction:
            await self.on_thread(self._conn.commit)

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.rollback()  # discards pages in memory: nothing to wait for


def is_busy(exc: BaseException) -> bool:
    """SQLite could not get a lock in time ("database is locked" or "database is busy").

    The statement did not run, so its request is a 503 that is safe to retry.
    """
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        ("database is locked", "database is busy")
    )


class Busy(enum.Enum):
    """The marker of a read that did not run at once: :data:`BUSY`."""

    BUSY = "busy"


BUSY = Busy.BUSY


class InlineReader:
    """A read-only connection used on the event loop thread itself, for point lookups.

    A hop to a driver thread costs more than the read (about 150 µs of wall time and
    36 µs of CPU against 5 µs here), and the hop's GIL hand-offs slow every other
    request. A primary-key lookup in WAL mode never waits for the writer, so it can
    run inline; it is told not to wait at all (``busy_timeout=0``), and when SQLite
    says busy (a checkpoint, recovery) the caller falls back to its usual path
    rather than blocking the loop.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def first(self, sql: str, parameters: Sequence[Any]) -> tuple[Any, ...] | Busy | None:
        try:
            conn = self._conn or self._open()
            # fetchall, not fetchone: a statement left unfinished keeps its read
            # transaction open, pinning an old snapshot and blocking checkpoints.
            rows: list[tuple[Any, ...]] = conn.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError:
            return BUSY
        return rows[0] if rows else None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{self._path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout=0")
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
