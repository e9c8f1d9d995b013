"""The growth run: create throughput and server memory with a full idempotency table.

The table is filled before the server starts, straight through SQL with the
store's own table definition (a bulk insert of completed records shaped like the
ones creates leave behind), because filling a million records through HTTP would
take longer than the whole benchmark.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.dialects import sqlite

from benchmarks import rows, servers

BATCH = 20_000
TTL = 24 * 3600


@dataclass(frozen=True)
class GrowthPoint:
    label: str
    records: int
    rps: float
    p99_ms: float
    rss_mb: float
    db_mb: float


def label(records: int) -> str:
    if records >= 1_000_000 and records % 1_000_000 == 0:
        return f"{records // 1_000_000} M"
    if records >= 1000 and records % 1000 == 0:
        return f"{records // 1000} k"
    return str(records)


_BODY = (
    '{"data":{"type":"account","id":"%s","attributes":{"reference_id":"user-%s",'
    '"name_first":"Ada","name_last":null,"email_address":null,"birthdate":null,'
    '"created_at":"2026-01-01T00:00:00.000000Z","updated_at":"2026-01-01T00:00:00.000000Z"}}}'
)
"""A create's recorded answer, as the service writes it (about 270 bytes)."""


def _record(organization_id: str, now: float, rand: random.Random) -> tuple[object, ...]:
    # Not secrets: test data only needs to be unique and spread like real keys, and a
    # seeded generator makes a million of them in seconds.
    account = f"act_{rand.getrandbits(96):024x}"
    key = f"{rand.getrandbits(128):032x}"
    created = now - rand.random() * TTL
    return (
        organization_id,
        key,
        f"{rand.getrandbits(256):064x}",
        "completed",
        201,
        "application/json",
        f"/api/v1/accounts/{account}",
        (_BODY % (account, key[:12])).encode(),
        created,
        created + TTL,
    )


def prefill(path: Path, count: int, progress: Callable[[str], None] = lambda _: None) -> None:
    """Insert ``count`` completed records of the organization ``bench`` into ``path``."""
    from retrysafe.database.schema import idempotency_records as records

    columns = (
        "organization_id",
        "key",
        "fingerprint",
        "status",
        "response_status",
        "response_content_type",
        "response_location",
        "response_body",
        "created_at",
        "expires_at",
    )
    statement = insert(records).values({name: None for name in columns})
    compiled = statement.compile(dialect=sqlite.dialect())
    order = [name for name in (compiled.positiontup or ())]
    assert order == list(columns), order  # the tuple order below follows the statement's
    conn = sqlite3.connect(path)
    # Only for the fill: a cache that holds the whole primary-key index (random keys
    # touch every page of it) and no fsync; the server later opens it as usual.
    conn.execute("PRAGMA cache_size = -524288")
    conn.execute("PRAGMA synchronous = OFF")
    try:
        (organization_id,) = conn.execute(
            "SELECT id FROM organizations WHERE name = 'bench'"
        ).fetchone()
        now = time.time()
        rand = random.Random(count)
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            with conn:
                conn.executemany(
                    compiled.string, [_record(organization_id, now, rand) for _ in range(size)]
                )
            done += size
            if done == count or done % (count // 10 or 1) < BATCH:
                progress(f"prefilled {done:,}/{count:,} records")
    finally:
        conn.close()
    # The fill ran without fsync, so its pages are still dirty in the OS cache; written
    # back during the first measurement (the server's first checkpoint syncs the file)
    # they stalled every create of it for up to half a second. On disk now, before it.
    _sync(path)
    progress("synced to disk")


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def databases(
    sizes: tuple[int, ...], progress: Callable[[str], None]
) -> Iterator[dict[int, tuple[str, str]]]:
    """One SQLite database per size, migrated, keyed and pre-filled: size -> (url, api key)."""
    with tempfile.TemporaryDirectory(prefix="rs-growth-") as directory:
        made: dict[int, tuple[str, str]] = {}
        for size in sizes:
            path = Path(directory) / f"growth-{size}.db"
            url = f"sqlite:///{path}"
            key = servers.create_api_key(url)
            prefix = label(size)
            prefill(path, size, lambda message: progress(f"{prefix}: {message}"))  # noqa: B023
            made[size] = (url, key)
        yield made


def measure(url: str, api_key: str, records: int, *, seconds: int, connections: int) -> GrowthPoint:
    row = rows.ROWS_BY_KEY["create"]
    path = Path(url.removeprefix("sqlite:///"))
    with (
        tempfile.TemporaryDirectory(prefix="rs-growth-run-") as workdir,
        servers.serving(
            row.server, workdir=Path(workdir), database_url=url, api_key=api_key
        ) as server,
    ):
        measured = rows.load(row, server, seconds=seconds, connections=connections)
    db_bytes = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return GrowthPoint(
        label=label(records),
        records=records,
        rps=measured.result.rps,
        p99_ms=measured.result.p99_ms,
        rss_mb=measured.rss_mb,
        db_mb=db_bytes / 2**20,
    )


def median_point(points: list[GrowthPoint]) -> GrowthPoint:
    """The medians of several passes at one size (RSS: the largest seen)."""
    import statistics

    return GrowthPoint(
        label=points[0].label,
        records=points[0].records,
        rps=statistics.median(p.rps for p in points),
        p99_ms=statistics.median(p.p99_ms for p in points),
        rss_mb=max(p.rss_mb for p in points),
        db_mb=max(p.db_mb for p in points),
    )
