"""The nemesis: SIGKILLs server processes and restarts PostgreSQL while the workers run.

The schedule is drawn from the seed before the run, by operation count rather
than by clock, so a slower machine sees the same events at the same points of
the workload. A killed server comes back after a short random pause, on its
own task, so kills may overlap (both servers down at once) and may coincide
with a PostgreSQL restart; PostgreSQL restarts never overlap each other.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from .cluster import Cluster
from .config import ChaosConfig

__all__ = ["Event", "EventKind", "Nemesis", "schedule"]


class EventKind(enum.Enum):
    KILL_SERVER = "kill a server"
    STOP_POSTGRES = "stop PostgreSQL (fast shutdown), then start it"
    KILL_POSTGRES = "SIGKILL PostgreSQL, then start it (crash recovery)"


@dataclass(frozen=True)
class Event:
    at_operation: int
    """Fire once this many operations have finished."""
    kind: EventKind
    pause: float
    """Seconds the server or PostgreSQL stays down."""


def schedule(config: ChaosConfig, rng: random.Random) -> list[Event]:
    """The run's events, spread over 5–90 % of the operations, in firing order."""
    low, high = config.operations // 20, max(config.operations * 9 // 10, 1)
    events = [
        Event(rng.randint(low, high), EventKind.KILL_SERVER, rng.uniform(0.2, 2.0))
        for _ in range(config.server_kills)
    ]
    events += [
        Event(
            rng.randint(low, high),
            EventKind.KILL_POSTGRES if number % 2 else EventKind.STOP_POSTGRES,
            rng.uniform(0.2, 1.5),
        )
        for number in range(config.postgres_restarts)
    ]
    return sorted(events, key=lambda event: event.at_operation)


class Nemesis:
    """Fires the scheduled events as the workload's progress passes them."""

    def __init__(
        self,
        cluster: Cluster,
        events: list[Event],
        rng: random.Random,
        progress: Callable[[], int],
    ) -> None:
        self._cluster = cluster
        self._events = events
        self._rng = rng
        self._progress = progress
        self._restarts: dict[int, asyncio.Task[None]] = {}
        self._postgres = asyncio.Lock()
        self.fired = 0
        self.skipped = 0
        """Events not fired: the workload ended first, or no server was up to kill."""

    async def run(self, workload_done: asyncio.Event) -> None:
        for number, event in enumerate(self._events):
            while self._progress() < event.at_operation:
                if workload_done.is_set():
                    self.skipped += len(self._events) - number
                    return
                await asyncio.sleep(0.02)
            await self._fire(event)

    async def _fire(self, event: Event) -> None:
        if event.kind is EventKind.KILL_SERVER:
            candidates = [i for i in self._cluster.up() if i not in self._restarts]
            if not candidates:
                self.skipped += 1
                return
            index = self._rng.choice(candidates)
            await asyncio.to_thread(self._cluster.kill_server, index)
            self._restarts[index] = asyncio.create_task(self._restart(index, event.pause))
        else:
            async with self._postgres:
                await asyncio.to_thread(
                    self._cluster.restart_postgres,
                    hard=event.kind is EventKind.KILL_POSTGRES,
                    pause=event.pause,
                )
        self.fired += 1

    async def _restart(self, index: int, pause: float) -> None:
        await asyncio.sleep(pause)
        try:
            await asyncio.to_thread(self._cluster.start_server, index)
        finally:
            del self._restarts[index]

    async def calm(self) -> None:
        """Wait until every killed server is back (PostgreSQL restarts finish in ``_fire``)."""
        while self._restarts:
            await asyncio.gather(*self._restarts.values())
