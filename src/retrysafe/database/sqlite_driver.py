"""An aiosqlite connection that crosses to its thread once per statement, not four times.

SQLAlchemy's aiosqlite adapter opens a cursor, executes, fetches and closes it
as four separate hops to the connection's thread. Under load each hop waits for
the event loop to come round again, and the hops of a write transaction happen
while SQLite's single write lock is held, so they set the throughput of every
write. Here a statement is one hop (execute and fetch together), cursor creation
and close are free, and COMMIT/ROLLBACK outside a transaction cost nothing.
``BEGIN IMMEDIATE`` travels with the transaction's first statement, and a
``COMMIT`` the caller announces travels with the last one, so a claim-insert-
record transaction holds the write lock for three hops instead of five.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)


def _open(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun explicitly by Database (BEGIN or
    # BEGIN IMMEDIATE); pysqlite's implicit BEGIN would start writes DEFERRED.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


async def connect(path: str) -> OneHopConnection:
    connection = OneHopConnection(partial(_open, path), 64)
    await connection  # starts the connection's thread and opens the file there
    return connection


class OneHopConnection(aiosqlite.Connection):
    _begin_pending = False
    _commit_pending = False

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def hop(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` on the connection's thread (aiosqlite leaves this untyped)."""
        return await self._execute(function, *args)  # type: ignore[no-untyped-call]

    def begin_immediate(self) -> None:
        """Start a write transaction with the next statement (no hop of its own)."""
        self._begin_pending = True

    def commit_after_next(self) -> None:
        """Commit right after the next statement, in the same hop."""
        self._commit_pending = True

    def _prologue(self) -> None:
        # Runs on the connection's thread: the flags were set before the statement
        # was queued, and the queue orders that write before this read.
        if self._begin_pending:
            self._begin_pending = False
            self._conn.execute("BEGIN IMMEDIATE")

    def _epilogue(self) -> None:
        if self._commit_pending:
            self._commit_pending = False
            self._conn.commit()

    async def run(self, sql: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Execute ``sql`` and fetch its rows in one hop (the fast path of ``Prepared``)."""
        rows: list[tuple[Any, ...]] = await self.hop(self._run, sql, parameters)
        return rows

    def _run(self, sql: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._prologue()
        cursor = self._conn.execute(sql, parameters)
        try:
            rows = cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
        self._epilogue()
        return rows

    async def commit(self) -> None:
        self._begin_pending = False
        if self._conn.in_transaction:
            await self.hop(self._conn.commit)

    async def rollback(self) -> None:
        self._begin_pending = self._commit_pending = False
        if self._conn.in_transaction:
            await self.hop(self._conn.rollback)


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
        self._connection._prologue()
        cursor = self._connection._conn.execute(sql, tuple(parameters))
        try:
            self.description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
        finally:
            cursor.close()
        self._connection._epilogue()

    def _run_many(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        self._connection._prologue()
        cursor = self._connection._conn.executemany(sql, [tuple(p) for p in seq])
        try:
            self.description = None
            self._rows = []
            self.rowcount = cursor.rowcount
        finally:
            cursor.close()
        self._connection._epilogue()

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
