"""The library mount in-process: CPU, latency and garbage-collector pauses per new key, no sockets.

    python benchmarks/library_cpu.py --store sqlite [--app anchor|plain] [--concurrency 32]
        [--requests 400] [--replay] [--no-freeze] [--profile]

What the ``lib-*`` rows of ``run.py`` serve, without uvicorn and wrk: RetrySafe
(``library_app.mounted``, the public entry point with its defaults) around the
anchor's own FastAPI app (``shared/bench/anchor_sqlite.py``, its aiosqlite
insert on a file of its own) or around a plain ASGI app that answers 201 at once,
with the memory, SQLite or Redis store. ``--concurrency`` tasks each send
``--requests`` keyed creates (a fresh key each; ``--replay``: one key for all,
recorded first) through the real lifespan, as a server would. It prints the
process CPU per request (user + system, every thread: the anchor's aiosqlite
thread and the SQLite writer's included), requests per second, the latency
percentiles, the full garbage collections (count, longest, total) and, on the
SQLite store, the units per group commit and how long units waited for theirs.

wrk's figures on a shared 2-core machine move by ±15 % between runs; these move
less and show what the server's half costs, which is what the library rows
compare. Round 6 of docs/benchmarks.md was measured with it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import servers
from benchmarks.servers import anchor_dir

STORES = ("memory", "sqlite", "redis")
REDIS_URL = "redis://127.0.0.1:6379/0"

Message = dict[str, Any]


async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A handler that costs nothing: what is left is the pipeline and the store."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"data":{"id":"act_1"}}'})


def _request(key: str) -> tuple[dict[str, Any], bytes]:
    body = b'{"data":{"attributes":{"name_first":"Ada","reference_id":"r%s"}}}' % key.encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/accounts",
        "raw_path": b"/api/v1/accounts",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer bench"),
            (b"idempotency-key", key.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return scope, body


async def _post(app: Callable[..., Awaitable[None]], key: str) -> int:
    scope, body = _request(key)
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status = 0

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class _GroupWaits:
    """How long each unit of the SQLite writer waited for its group commit to begin."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def install(self) -> None:
        from retrysafe.database import sqlite_writer

        waits, original_run, original_group = (
            self.waits,
            sqlite_writer.SqliteWriter.run,
            sqlite_writer.SqliteWriter._commit_group,
        )
        queued: dict[int, float] = {}

        async def run(writer: Any, unit: Any) -> Any:
            queued[id(unit)] = time.perf_counter()
            return await original_run(writer, unit)

        async def commit_group(writer: Any, batch: list[Any]) -> None:
            began = time.perf_counter()
            waits.extend(began - queued.pop(id(p.unit), began) for p in batch)
            await original_group(writer, batch)

        sqlite_writer.SqliteWriter.run = run  # type: ignore[method-assign]
        sqlite_writer.SqliteWriter._commit_group = commit_group  # type: ignore[method-assign]


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    at = lambda q: 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]  # noqa: E731
    return f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {1000 * ordered[-1]:.1f} ms"


async def measure(args: argparse.Namespace, workdir: str) -> None:
    os.environ["PERF_DB"] = os.path.join(workdir, "anchor.db")
    sys.path.insert(0, str(anchor_dir()))  # library_app imports the anchor's app
    from benchmarks import library_app

    handler = library_app.anchor if args.app == "anchor" else plain
    url = {"memory": "", "sqlite": f"sqlite:///{workdir}/idempotency.db", "redis": REDIS_URL}
    if args.store == "sqlite":
        servers.migrate(url["sqlite"])
    store = library_app.store(args.store, url[args.store])
    from retrysafe.asgi import RetrySafe

    app = RetrySafe(handler, store=store, freeze_heap=not args.no_freeze)
    waits = _GroupWaits()
    if args.store == "sqlite":
        waits.install()
    pauses: list[float] = []
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            pauses.append(time.perf_counter() - started.pop("at"))

    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    answer = (await outbox.get())["type"]
    if answer != "lifespan.startup.complete":
        raise SystemExit(f"start-up failed: {answer}")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    run_id = f"{time.time_ns()}"

    async def client(n: int, count: int, record: bool) -> None:
        for i in range(count):
            key = f"replayed-{run_id}" if args.replay else f"{run_id}-{n}-{i}"
            began = time.perf_counter()
            status = await _post(app, key)
            if record:
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1

    if args.replay:
        await client(-1, 1, record=False)
    await asyncio.gather(*(client(-n - 2, 50, record=False) for n in range(4)))  # warm up
    profiler = cProfile.Profile() if args.profile else None
    gc.callbacks.append(on_gc)
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(client(n, args.requests, record=True) for n in range(args.concurrency)))
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    gc.callbacks.remove(on_gc)
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await lifespan
    # A store object is its owner's to close (RetrySafe closes only what it opened).
    database, close = getattr(store, "database", None), getattr(store, "aclose", None)
    if database is not None:
        await database.dispose()
    elif close is not None:
        await close()

    total = len(latencies)
    kind = "replay" if args.replay else "new key"
    clients = f"{args.concurrency} x {args.requests}"
    print(f"{args.store} store around the {args.app} app, {kind}, {clients}:")
    print(f"  CPU per request: {1e6 * cpu / total:.0f} µs; {total / wall:.0f} requests/s")
    print(f"  latency: {_percentiles(latencies)}")
    print(f"  answers: {', '.join(f'{s}: {c}' for s, c in sorted(statuses.items()))}")
    longest = (
        f", longest {1000 * max(pauses):.1f} ms, total {1000 * sum(pauses):.0f} ms"
        if pauses
        else ""
    )
    print(f"  full garbage collections: {len(pauses)}{longest}")
    writer = getattr(getattr(store, "database", None), "writer", None)
    if writer is not None and writer.groups:
        print(f"  units per group commit: {writer.units / writer.groups:.1f}")
        print(f"  units waited for their group: {_percentiles(waits.waits)}")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    if statuses.keys() != {201}:
        raise SystemExit(f"expected only 201 answers, got {statuses}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=STORES, default="memory")
    parser.add_argument("--app", choices=("anchor", "plain"), default="anchor")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400, help="per concurrent client")
    parser.add_argument("--replay", action="store_true", help="one key for every request")
    parser.add_argument("--no-freeze", action="store_true", help="RetrySafe(freeze_heap=False)")
    parser.add_argument("--profile", action="store_true", help="cProfile of the measured part")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        uvloop.run(measure(args, workdir))


if __name__ == "__main__":
    main()
