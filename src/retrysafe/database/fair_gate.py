"""Turns at the PostgreSQL pool in arrival order: no request waits behind later ones.

SQLAlchemy's async pool queue is an ``asyncio.Queue`` taken with ``get_nowait``
first: a connection given back wakes the longest waiter, but any request arriving
before that waiter runs takes the connection, and the waiter goes to the back of
the queue again. Under load (32 requests in flight on a pool of 10, each taking a
connection twice) a few requests lost that race again and again: creates on
PostgreSQL had a p99 near 100 ms beside a p50 of 16 ms, and the p99 fell to 36 ms
with a pool as large as the load, which is not a default a server can have.

The gate holds one permit per pooled connection and hands a permit given back
straight to the longest waiter, so every checkout of the pool through it finds a
connection and waits only behind requests that came before it. A request that
already holds a permit (a lookup made inside its open transaction) goes straight
to the pool, as before: making it queue behind newcomers while it holds a
connection could leave every permit waiting on another.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from retrysafe.database.unavailable import DatabaseUnavailable

__all__ = ["FairGate", "Held"]


class Held:
    """How many permits the current request holds (per request task; see ``FairGate.held``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class FairGate:
    """``size`` permits handed out first come, first served; see the module docstring."""

    def __init__(self, size: int, timeout: float) -> None:
        self._free = size
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._held: contextvars.ContextVar[Held] = contextvars.ContextVar("retrysafe_gate")

    @property
    def waiting(self) -> int:
        """Requests waiting for a permit now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A permit for the block; none is taken when this request holds one already."""
        held = await self.enter()
        try:
            yield
        finally:
            self.exit(held)

    async def enter(self) -> Held | None:
        """Take a permit unless this request holds one already; give the result to :meth:`exit`.

        :meth:`held` as two calls, for a checkout written as a class (a generator-based
        context manager costs a few µs more per use, and a create checks out twice).
        """
        held = self._held.get(None)
        if held is None:
            # Set in the request task's own context: its nested checkouts see it, and
            # other requests (other tasks, other contexts) do not.
            held = Held()
            self._held.set(held)
        if held.count:
            return None
        await self._acquire()
        held.count += 1
        return held

    def exit(self, held: Held | None) -> None:
        """Give back the permit :meth:`enter` took (nothing when it took none)."""
        if held is not None:
            held.count -= 1
            self._release()

    async def _acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over just as we stopped waiting: pass it on
            else:
                waiter.cancel()  # skipped by _release from now on
            if isinstance(exc, TimeoutError):
                # Every pooled connection stayed busy: nothing ran, so a 503 the client
                # retries with the same key, as SQLAlchemy's own pool timeout is.
                raise DatabaseUnavailable(
                    f"no PostgreSQL connection of the pool came free within {self.timeout:g} s"
                ) from None
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the permit goes to it directly, never to the count
                return
        self._free += 1
