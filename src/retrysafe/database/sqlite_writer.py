"""The one writer of a SQLite file per process: group-committed units and exclusive turns.

SQLite lets one connection write at a time. A pool of connections taking that lock
in turn queues them in SQLite's busy handler, which sleeps; and a transaction that
holds the lock across several awaits (claim, handler, record) holds it for as long
as the busy event loop takes to come back to it. Here every write of the process
goes through one connection, in one of two shapes:

- A **unit** (:meth:`SqliteWriter.run`) is a function of the sqlite3 connection
  that runs to completion without awaiting: the idempotency record of a request
  together with the rows its handler wrote, or a batch of API-log entries. Every
  unit queued by the time the connection is free forms one group: one ``BEGIN
  IMMEDIATE``, the units one after the other, one ``COMMIT`` and so one fsync for
  all of them. Each caller hears its outcome only after that COMMIT. A unit that
  raises rolls back only itself: the group is then rolled back and run again with
  one ``SAVEPOINT`` per unit (units are functions of the connection, so they can
  run twice). Failures are rare (a taken key, a conflicting insert), so the common
  group sends two statements fewer per unit. Units queued while a group commits
  form the next group, so groups grow with the load and need no timer.
- A **turn** (:meth:`SqliteWriter.turn`) is the connection held exclusively, for
  a transaction whose statements depend on each other's results (an UPDATE …
  RETURNING, a read of the request's own writes). Turns and groups alternate, so
  neither starves the other.

Statements run inline on the event loop (see
:class:`~retrysafe.database.sqlite_driver.InlineConnection`); only the COMMIT
goes to the connection's thread; a ``BEGIN`` that meets another process's lock
is tried again every few milliseconds, never waiting on the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from retrysafe.database.sqlite_driver import InlineConnection
from retrysafe.database.unavailable import DatabaseUnavailable

__all__ = ["SqliteWriter", "Unit"]

T = TypeVar("T")

Unit = Callable[[sqlite3.Connection], T]
"""Work for one savepoint of a group: runs inline, must not await, may raise to undo itself."""


class _Pending:
    __slots__ = ("future", "unit")

    def __init__(self, unit: Unit[Any], future: asyncio.Future[Any]) -> None:
        self.unit = unit
        self.future = future


class SqliteWriter:
    """Shares the process's one write connection between group commits and exclusive turns."""

    def __init__(self, open_connection: Callable[[], Awaitable[InlineConnection]]) -> None:
        self._open_connection = open_connection
        self._connection: InlineConnection | None = None
        self._opening: asyncio.Lock | None = None
        self._units: list[_Pending] = []
        self._turns: deque[asyncio.Future[None]] = deque()
        self._held = False
        self._dispatch_scheduled = False
        self._group_task: asyncio.Task[None] | None = None
        # After a group the next waiting turn goes first, and after a turn the next
        # group: a stream of either never starves the other.
        self._units_next = False
        self.groups = 0
        """Groups committed so far (the units per commit are ``units / groups``)."""
        self.units = 0
        """Units committed so far."""

    async def connection(self) -> InlineConnection:
        """The write connection, opened on first use and again after it was closed."""
        connection = self._connection
        if connection is not None and connection._connection is not None:
            return connection
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            connection = self._connection
            if connection is None or connection._connection is None:
                connection = self._connection = await self._open_connection()
            return connection

    async def run(self, unit: Unit[T]) -> T:
        """Run ``unit`` in the next group; its result (or exception) once the group committed.

        An exception raised by ``unit`` rolls back what it did and nothing else; a
        failure of the group as a whole (lock, COMMIT) raises
        :class:`DatabaseUnavailable`, and then no unit of the group was written.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._units.append(_Pending(unit, future))
        self._schedule_dispatch()
        return await future

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[InlineConnection]:
        """The write connection held exclusively until the block ends; the caller begins
        and ends its transaction, and whatever it leaves open is rolled back."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(granted)
        self._schedule_dispatch()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed over just as we were cancelled: give it back
            raise
        try:
            connection = await self.connection()
            try:
                yield connection
            finally:
                if connection._connection is not None and connection.raw.in_transaction:
                    connection.raw.rollback()
        finally:
            self._release()

    async def close(self) -> None:
        """Wait for the group being committed, fail what is still queued, close the connection."""
        if self._group_task is not None:
            await asyncio.gather(self._group_task, return_exceptions=True)
        for pending in self._units:
            if not pending.future.done():
                pending.future.set_exception(DatabaseUnavailable("the database is shutting down"))
        self._units = []
        connection, self._connection = self._connection, None
        if connection is not None and connection._connection is not None:
            await connection.close()

    def _schedule_dispatch(self) -> None:
        # Dispatched on the next loop iteration rather than now: units queued by the
        # requests of this iteration then share one commit even when the writer is idle.
        if not self._held and not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _release(self) -> None:
        self._held = False
        self._schedule_dispatch()

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._held:
            return
        while self._turns and self._turns[0].done():
            self._turns.popleft()  # its waiter was cancelled
        if self._units and (self._units_next or not self._turns):
            self._held = True
            self._units_next = False
            batch, self._units = self._units, []
            self._group_task = asyncio.ensure_future(self._commit_group(batch))
        elif self._turns:
            self._held = True
            self._units_next = True
            self._turns.popleft().set_result(None)

    async def _commit_group(self, batch: list[_Pending]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            connection = await self.connection()
            await connection.begin_immediate()
            raw = connection.raw
            # Callers cancelled before the group began are skipped.
            live = [pending for pending in batch if not pending.future.done()]
            outcomes = _run_units(raw, live, savepoints=False)
            if outcomes and outcomes[-1][2] is not None:
                # A unit raised (the first pass stops there), perhaps after writing:
                # undo the group and run it again with a savepoint per unit, so that
                # what fails undoes only itself.
                raw.rollback()
                await connection.begin_immediate()
                outcomes = _run_units(raw, live, savepoints=True)
            await connection.commit()
        except (sqlite3.Error, OSError, DatabaseUnavailable) as exc:
            current = self._connection
            if current is not None and current._connection is not None:
                current.raw.rollback()  # a no-op outside a transaction
            failure = exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable(str(exc))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(failure)
            return
        finally:
            self._group_task = None
            self._release()
        self.groups += 1
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                self.units += 1
                future.set_result(result)
            else:
                future.set_exception(error)


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _run_units(
    raw: sqlite3.Connection, batch: list[_Pending], *, savepoints: bool
) -> list[_Outcome]:
    """Each unit's outcome, in order; without ``savepoints`` up to the first that raises."""
    outcomes: list[_Outcome] = []
    for pending in batch:
        if savepoints:
            outcomes.append(_run_in_savepoint(raw, pending))
        else:
            try:
                outcomes.append((pending.future, pending.unit(raw), None))
            except Exception as exc:
                outcomes.append((pending.future, None, exc))
        if not raw.in_transaction:
            # SQLite ended the whole transaction (disk full, I/O error): the units
            # before this one are gone with it.
            raise DatabaseUnavailable("the write transaction was aborted by SQLite")
        if not savepoints and outcomes[-1][2] is not None:
            break
    return outcomes


def _run_in_savepoint(raw: sqlite3.Connection, pending: _Pending) -> _Outcome:
    raw.execute("SAVEPOINT retrysafe_unit")
    try:
        result = pending.unit(raw)
    except Exception as exc:
        if raw.in_transaction:
            raw.execute("ROLLBACK TO retrysafe_unit")
            raw.execute("RELEASE retrysafe_unit")
        return pending.future, None, exc
    raw.execute("RELEASE retrysafe_unit")
    return pending.future, result, None
