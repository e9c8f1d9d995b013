"""The rows of the benchmark table, and one measured run of a row.

A run starts the row's server on a fresh database, drives it with wrk, and reads
the CPU every server process used meanwhile, so a row reports both what the
client saw (requests/second, latency) and what the server paid (CPU per request,
and per worker when there are several).
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import databases, proc, servers, wrk
from benchmarks.servers import ServerSpec

REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Row:
    """One line of the table: a server and the requests wrk sends it."""

    key: str
    label: str
    server: ServerSpec
    mode: str
    """create.lua's MODE: new (a fresh key per request), same (one key) or bad (invalid body)."""
    expected_status: int
    """What every answer of this row should be; other statuses are reported."""
    baseline: str | None = "anchor_sqlite"
    """The row whose req/s, in the same pass, is this row's 1.00× (None: an anchor itself)."""
    unavailable: str = ""
    """Why this row can never be measured (a peer without an HTTP integration); never run."""


def _library(store: str, mode: str) -> Row:
    replay = mode == "same"
    return Row(
        f"lib-{store}" + ("-replay" if replay else ""),
        f"library: pipeline on the anchor's app, {store} store, "
        + ("replay, one key" if replay else "new key"),
        ServerSpec("library", variant=store),
        mode,
        201,
    )


def _peer(name: str, mode: str, backend: str) -> Row:
    replay = mode == "same"
    return Row(
        f"peer-{name}" + ("-replay" if replay else ""),
        f"peer {name} ({backend}) on the anchor's app, "
        + ("replay, one key" if replay else "new key"),
        ServerSpec("peer", variant=name),
        mode,
        201,
    )


PEER_BACKENDS = {
    "asgi-idempotency-header": "Redis",
    "fastapi-idempotency-key": "Redis",
    "fastapi-idempotency": "memory",
}
"""The peers measured, and the store each is wired with (its Redis backend where it has one)."""

PEER_NOTES = {
    "fastapi-idempotency-key": (
        "its Redis backend stores the completed record with an empty fingerprint"
        " (RedisBackend.store_response), so every replay answers 422 mismatch"
    ),
}
"""What a peer is known to get wrong on these rows, read in its code and seen in the runs."""

PEER_MODULES = {
    "asgi-idempotency-header": "idempotency_header_middleware",
    "fastapi-idempotency-key": "fastapi_idempotency_key",
    "fastapi-idempotency": "fastapi_idempotency",
}

IDEMPOTENCY_KIT = (
    "idempotency-kit 0.5.0 has no HTTP integration: it is a decorator for async"
    " functions (@async_idempotent on a use case, its result stored through an adapter);"
    " the package has no ASGI middleware and imports no web framework, so it cannot wrap"
    " the anchor's handler"
)

ROWS: tuple[Row, ...] = (
    Row(
        "anchor_sqlite",
        "anchor_sqlite: FastAPI, one aiosqlite insert",
        ServerSpec("anchor_sqlite"),
        "new",
        201,
        baseline=None,
    ),
    Row(
        "bare",
        "bare_app.py: SQLAlchemy pool, a transaction each (informational)",
        ServerSpec("bare"),
        "new",
        201,
    ),
    Row("create", "retrysafe create, new key (SQLite)", ServerSpec("retrysafe"), "new", 201),
    Row("replay", "retrysafe replay, one key (SQLite)", ServerSpec("retrysafe"), "same", 201),
    Row("error", "retrysafe 4xx, recorded then replayed", ServerSpec("retrysafe"), "bad", 400),
    # Observability's cost on the create path: "create" has the API log and metrics on
    # and the request line filtered out; these two take one away, add the other.
    Row(
        "no-api-log",
        "retrysafe create, API log off (SQLite)",
        ServerSpec("retrysafe", api_log=False),
        "new",
        201,
    ),
    Row(
        "info-log",
        "retrysafe create, request line at info, the default (SQLite)",
        ServerSpec("retrysafe", log_level="info"),
        "new",
        201,
    ),
    Row(
        "sync-normal",
        "retrysafe create, --sqlite-synchronous normal (the opt-out)",
        ServerSpec("retrysafe", sqlite_synchronous="normal"),
        "new",
        201,
    ),
    Row(
        "workers",
        "retrysafe create, 2 workers (SQLite)",
        ServerSpec("retrysafe", workers=2),
        "new",
        201,
    ),
    Row(
        "anchor_postgres",
        "anchor_postgres: FastAPI, asyncpg pool, one insert",
        ServerSpec("anchor_postgres", database="postgres"),
        "new",
        201,
        baseline=None,
    ),
    Row(
        "anchor_postgres-workers",
        "anchor_postgres in 2 uvicorn workers (informational: what a second process gives here)",
        ServerSpec("anchor_postgres", database="postgres", workers=2),
        "new",
        201,
        baseline="anchor_postgres",
    ),
    Row(
        "postgres",
        "retrysafe create (PostgreSQL)",
        ServerSpec("retrysafe", database="postgres"),
        "new",
        201,
        baseline="anchor_postgres",
    ),
    Row(
        "postgres-workers",
        "retrysafe create, 2 workers (PostgreSQL)",
        ServerSpec("retrysafe", database="postgres", workers=2),
        "new",
        201,
        baseline="anchor_postgres",
    ),
    *(_library(store, mode) for store in ("memory", "sqlite", "redis") for mode in ("new", "same")),
    *(_peer(name, mode, PEER_BACKENDS[name]) for name in PEER_BACKENDS for mode in ("new", "same")),
    Row(
        "peer-idempotency-kit",
        "peer idempotency-kit",
        ServerSpec("peer", variant="idempotency-kit"),
        "new",
        201,
        unavailable=IDEMPOTENCY_KIT,
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}
LIBRARY_ROWS = tuple(row.key for row in ROWS if row.server.kind == "library")
PEER_ROWS = tuple(row.key for row in ROWS if row.server.kind == "peer" and not row.unavailable)


@dataclass(frozen=True)
class Measurement:
    """One run of one row."""

    row: str
    result: wrk.WrkResult
    cpu_ms_per_request: float
    """Server CPU (all its processes, user + system) per answered request."""
    worker_cpu_seconds: tuple[float, ...]
    """CPU seconds of each server process that used any, busiest first."""
    rss_mb: float
    """Resident memory of all server processes right after the load, in MiB."""
    argv: tuple[str, ...]
    """The server's command line (``python`` stands for the interpreter)."""
    client_cores: float = 0.0
    """CPU wrk itself used, in cores (CPU seconds per second): the share of the
    machine the load generator took from the server."""
    database_cpu_ms_per_request: float | None = None
    """CPU of the database or store server the row talks to (every PostgreSQL or
    Redis process) per answered request; None where it runs inside the server
    process (SQLite, the memory stores)."""

    @property
    def unexpected(self) -> int:
        """Answers whose status is not the row's expected one."""
        expected = ROWS_BY_KEY[self.row].expected_status
        return sum(n for status, n in self.result.statuses.items() if status != expected)


@contextlib.contextmanager
def _library_store(store: str, workdir: Path) -> Iterator[dict[str, str]]:
    """``LIB_STORE`` and its URL for one library row: a migrated SQLite file, or a Redis prefix."""
    if store == "sqlite":
        url = f"sqlite:///{workdir / 'idempotency.db'}"
        servers.migrate(url)
        yield {"LIB_STORE": store, "LIB_STORE_URL": url}
    elif store == "redis":
        with _redis_prefix("LIB_PREFIX") as env:
            yield {**env, "LIB_STORE": store, "LIB_STORE_URL": REDIS_URL}
    else:
        yield {"LIB_STORE": store}


@contextlib.contextmanager
def _redis_prefix(variable: str) -> Iterator[dict[str, str]]:
    """A fresh Redis key prefix for one run, in ``variable``; its keys are deleted afterwards."""
    import redis

    prefix = f"retrysafe-bench-{uuid.uuid4().hex[:8]}:"
    try:
        yield {"PEER_REDIS_URL": REDIS_URL, variable: prefix}
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            batch = []
            for name in client.scan_iter(match=f"{prefix}*", count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    client.delete(*batch)
                    batch = []
            if batch:
                client.delete(*batch)
        finally:
            client.close()


def measure(
    row: Row, *, seconds: int, connections: int, database_url: str | None = None
) -> Measurement:
    """Run ``row`` once on a fresh database (or on ``database_url`` when given)."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rs-bench-")))
        if database_url is None:
            database_url = stack.enter_context(databases.fresh(row.server.database, workdir))
        env = {}
        if row.server.kind == "peer":
            env = stack.enter_context(_redis_prefix("PEER_PREFIX"))
        elif row.server.kind == "library":
            env = stack.enter_context(_library_store(row.server.variant, workdir))
        if row.server.kind == "anchor_postgres" and row.server.workers > 1:
            # The anchor creates its table at start-up, and two processes doing so at
            # once collide (CREATE TABLE IF NOT EXISTS is not safe under concurrency):
            # one process starts first, as the anchor's README does, and makes it.
            with servers.serving(
                replace(row.server, workers=1), workdir=workdir, database_url=database_url
            ):
                pass
        server = stack.enter_context(
            servers.serving(row.server, workdir=workdir, database_url=database_url, env=env)
        )
        return load(row, server, seconds=seconds, connections=connections)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows here


def database_processes(row: Row) -> frozenset[str]:
    """The command names of the out-of-process database or store ``row`` talks to."""
    if row.server.database == "postgres":
        return frozenset({"postgres"})
    if (row.server.kind == "library" and row.server.variant == "redis") or (
        row.server.kind == "peer" and PEER_BACKENDS.get(row.server.variant) == "Redis"
    ):
        return frozenset({"redis-server"})
    return frozenset()


def load(row: Row, server: servers.RunningServer, *, seconds: int, connections: int) -> Measurement:
    """Drive a running ``server`` with ``row``'s requests and read what it cost."""
    pids = server.pids()
    before = {pid: proc.cpu_seconds(pid) for pid in pids}
    # The whole database server, background processes included: on a quiet machine
    # nothing else uses it, and its checkpointer and WAL writer work for this load too.
    database = database_processes(row)
    database_before = {pid: proc.cpu_seconds(pid) for pid in proc.named(database)}
    client_before = proc.children_cpu_seconds()
    result, _output = wrk.run(
        server.url, mode=row.mode, api_key=server.api_key, seconds=seconds, connections=connections
    )
    client = proc.children_cpu_seconds() - client_before
    used = {pid: proc.cpu_seconds(pid) - before[pid] for pid in pids}
    # Pools open their connections as the load needs them: a backend started meanwhile
    # counts whole. One that exited meanwhile reads 0 and would count negative: left out.
    database_used = sum(
        max(proc.cpu_seconds(pid) - database_before.get(pid, 0.0), 0.0)
        for pid in proc.named(database)
    )
    answered = max(result.requests, 1)
    return Measurement(
        row=row.key,
        result=result,
        cpu_ms_per_request=1000 * sum(used.values()) / answered,
        worker_cpu_seconds=tuple(sorted((c for c in used.values() if c > 0.05), reverse=True)),
        rss_mb=sum(proc.rss_bytes(pid) for pid in pids) / 2**20,
        argv=tuple(server.argv),
        client_cores=client / max(result.seconds, 1e-9),
        database_cpu_ms_per_request=1000 * database_used / answered if database else None,
    )
