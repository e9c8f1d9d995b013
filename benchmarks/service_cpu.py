"""CPU per request of the whole service, in-process: ``create_app`` on a real database, no sockets.

    python benchmarks/service_cpu.py [--database sqlite|postgres] [--requests 2000]
                                     [--rounds 3] [--profile create|replay] [--statements]
                                     [--no-api-log]

wrk measures the server through the network on a machine it shares with the
database and other work; this drives the real app (every layer, the handler, the
store, the database) with canned ASGI messages, one request after another on one
uvloop event loop, and reports the process CPU time per request of a create (a
new key each time) and of a replay (one key). On PostgreSQL it also reports the
CPU of the database's own backends serving this process (read from /proc by the
pids pg_stat_activity gives for the throwaway database), so the figures hold on a
machine where other work uses the same server. The API-log writer flushes every
50 ms here and each round waits for its last flush, so an entry's batched insert
is in the figure of the request it describes. ``--statements`` counts what each
request sends to the database (SQLite statements, PostgreSQL round trips);
``--profile`` prints the top of a cProfile of one of the two.

Sequential requests miss what concurrency costs (group commits, queueing), so the
figures are a floor for what wrk's server-CPU column shows, not a substitute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from benchmarks import databases
from benchmarks.layers import request_scope
from retrysafe.asgi import ASGIApp, Message
from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.log_config import configure_structlog
from retrysafe.service.admin import create_api_key
from retrysafe.service.app import create_app
from retrysafe.settings import LogFormat, LogLevel, Settings

RATE_LIMIT = "1000000/second"


def body_for(reference: str) -> bytes:
    return b'{"data":{"attributes":{"name_first":"Ada","reference_id":"%s"}}}' % reference.encode()


API_LOG_FLUSH = 0.05
"""Seconds between the API-log writer's flushes (the service's default is 0.5)."""


class Service:
    """The app with its lifespan running, and a way to send it one request."""

    def __init__(self, app: ASGIApp, secret: str, url: str = "") -> None:
        self.app = app
        self.secret = secret
        self.url = url
        self._lifespan: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def start(self) -> None:
        self._lifespan = asyncio.create_task(
            self.app({"type": "lifespan"}, self._inbox.get, self._outbox.put)  # type: ignore[arg-type]
        )
        await self._inbox.put({"type": "lifespan.startup"})
        started = await self._outbox.get()
        assert started["type"] == "lifespan.startup.complete", started

    async def stop(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        assert self._lifespan is not None
        await self._lifespan

    async def post(self, key: str, reference: str) -> int:
        body = body_for(reference)
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(request_scope(self.secret, key, body), receive, send)  # type: ignore[arg-type]
        return status


@contextmanager
def counted_statements(kind: str) -> Iterator[list[str]]:
    """Every statement (SQLite) or round trip (PostgreSQL) sent to the database while inside."""
    from tests.database.round_trips import asyncpg_round_trips, sqlite_statements

    with sqlite_statements() if kind == "sqlite" else asyncpg_round_trips() as sent:
        yield sent


async def measure(
    kind: str,
    url: str,
    workdir: Path,
    requests: int,
    rounds: int,
    profile: str | None,
    statements: bool,
    api_log: bool = True,
) -> None:
    configure_structlog(LogLevel.WARNING, LogFormat.JSON)
    db = Database(url)
    await upgrade(db)
    _, secret = await create_api_key(db, "bench")
    await db.dispose()
    settings = Settings(
        database_url=url,
        rate_limit=RATE_LIMIT,
        document_dir=workdir / "documents",
        api_log_flush_interval=API_LOG_FLUSH,
        **({"api_log_retention": 0} if not api_log else {}),
    )
    with counted_statements(kind) if statements else contextlib.nullcontext([]) as sent:
        service = Service(create_app(settings), secret, url)
        await service.start()
        try:
            await _run(service, kind, requests, rounds, profile, statements, sent)
        finally:
            await service.stop()


async def _run(
    service: Service,
    kind: str,
    requests: int,
    rounds: int,
    profile: str | None,
    statements: bool,
    sent: list[str],
) -> None:
    serial = iter(range(10**9))

    async def creates(n: int) -> None:
        for _ in range(n):
            i = next(serial)
            status = await service.post(f"new-{i}", f"r{i}")
            assert status == 201, status

    async def replays(n: int) -> None:
        for _ in range(n):
            status = await service.post("replayed", "replayed")
            assert status == 201, status

    await creates(50)
    await replays(50)
    if statements:
        for name, run in (("create", creates), ("replay", replays)):
            before = len(sent)
            await run(1)
            print(f"{name}: {len(sent) - before} statements on {kind}")
            for each in sent[before:]:
                print("   ", " ".join(str(each).split())[:150])
    cases: dict[str, Callable[[int], Any]] = {"create": creates, "replay": replays}
    if profile is not None:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        await cases[profile](requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        pstats.Stats(profiler).sort_stats("cumtime").print_stats(70)
        return
    best: dict[str, tuple[float, float, float | None]] = {}
    for _ in range(rounds):
        for name, run in cases.items():
            gc.collect()
            backends_before = await backend_cpu(service.url) if kind == "postgres" else None
            start = os.times()
            await run(requests)
            await asyncio.sleep(API_LOG_FLUSH * 2)  # the last entries' insert; idle costs no CPU
            end = os.times()
            user = (end.user - start.user) / requests * 1e6
            system = (end.system - start.system) / requests * 1e6
            database = None
            if backends_before is not None:
                after = await backend_cpu(service.url)
                used = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in after.items())
                database = used / requests * 1e6
            if name not in best or user + system < sum(best[name][:2]):
                best[name] = (user, system, database)
    for name, (user, system, database) in best.items():
        backends = "" if database is None else f"; PostgreSQL backends {database:.0f} µs"
        print(
            f"{kind} {name}: {user + system:.0f} µs CPU per request"
            f" ({user:.0f} user + {system:.0f} system{backends}; best of {rounds} x {requests})"
        )


async def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``url``'s database.

    The API log's flushes are the service's too, so every backend of the throwaway
    database counts (this query's own connection excepted).
    """
    import asyncpg

    from benchmarks import proc

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {row["pid"]: proc.cpu_seconds(row["pid"]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=("create", "replay"))
    parser.add_argument("--statements", action="store_true")
    parser.add_argument(
        "--no-api-log", action="store_true", help="as --api-log-retention 0: no API-log entries"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as workdir,
        databases.fresh(args.database, Path(workdir)) as url,
    ):
        uvloop.run(
            measure(
                args.database,
                url,
                Path(workdir),
                args.requests,
                args.rounds,
                args.profile,
                args.statements,
                not args.no_api_log,
            )
        )


if __name__ == "__main__":
    main()
