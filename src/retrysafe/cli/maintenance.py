"""``retrysafe migrate`` and ``retrysafe purge-expired``, as steps a progress bar can follow."""

from __future__ import annotations

import time
from dataclasses import dataclass

import typer
from sqlalchemy import func, select

from retrysafe.cli.database import nothing, run_with_database, shown_database
from retrysafe.cli.options import ApiLogRetentionOption, DatabaseOption
from retrysafe.cli.progress import Bars, bars
from retrysafe.database import Database
from retrysafe.database.migrate import MigrationProgress
from retrysafe.database.schema import idempotency_records
from retrysafe.observability.retention import count_expired_api_logs, purge_api_logs
from retrysafe.settings import DEFAULT_DATABASE_URL, Settings
from retrysafe.stores.sql import SqlIdempotencyStore

__all__ = ["MIGRATION_BAR", "Purged", "migrate", "migration_progress", "purge_all", "purge_expired"]

RECORDS_BAR = "Idempotency records"
API_LOGS_BAR = "API-log entries"
MIGRATION_BAR = "Migrating"

DEFAULT_API_LOG_RETENTION = Settings().api_log_retention

SLICES = 50
"""Most DELETEs the expired records are split into: one per slice of their expiry times."""


@dataclass(frozen=True, slots=True)
class Purged:
    records: int
    api_logs: int


async def purge_all(db: Database, *, api_log_retention: int, bars: Bars) -> Purged:
    """Delete expired idempotency records, then API-log entries older than the retention.

    Records go in slices of their expiry time, oldest first, so each DELETE is
    short and the bar moves; the store's own ``purge_expired(cutoff)`` does each
    slice, so what counts as expired (a held lease is kept) stays the store's rule.
    A retention of 0 keeps API-log entries as they are.
    """
    now = time.time()
    store = SqlIdempotencyStore(db)
    count, oldest = await _expired_records(db, now)
    bars.start(RECORDS_BAR, count)
    records = 0
    if count:
        slices = max(1, min(SLICES, count // 1000))
        step = (now - oldest) / slices
        for index in range(1, slices + 1):
            cutoff = now if index == slices else oldest + step * index
            purged = await store.purge_expired(cutoff)
            records += purged
            bars.advance(RECORDS_BAR, purged)
    bars.finish(RECORDS_BAR)
    api_logs = 0
    if api_log_retention > 0:
        bars.start(
            API_LOGS_BAR, await count_expired_api_logs(db, now=now, retention=api_log_retention)
        )
        api_logs = await purge_api_logs(
            db,
            now=now,
            retention=api_log_retention,
            on_batch=lambda deleted: bars.advance(API_LOGS_BAR, deleted),
        )
        bars.finish(API_LOGS_BAR)
    return Purged(records, api_logs)


async def _expired_records(db: Database, now: float) -> tuple[int, float]:
    """How many records have expired by ``now``, and the earliest expiry among them."""
    query = select(func.count(), func.min(idempotency_records.c.expires_at)).where(
        idempotency_records.c.expires_at <= now
    )
    async with db.read() as conn:
        count, oldest = (await conn.execute(query)).one()
    return int(count), float(oldest if oldest is not None else now)


def migration_progress(bars: Bars) -> MigrationProgress:
    """A ``retrysafe.database.migrate.upgrade`` progress callback drawing one bar."""

    def progress(done: int, total: int, _revision: str) -> None:
        if done == 0:
            bars.start(MIGRATION_BAR, total)
        else:
            bars.advance(MIGRATION_BAR)

    return progress


def purge_expired(
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    api_log_retention: ApiLogRetentionOption = DEFAULT_API_LOG_RETENTION,
) -> None:
    """Delete expired idempotency records and old API-log entries; print how many."""
    with bars() as progress:

        async def purge(db: Database) -> Purged:
            return await purge_all(db, api_log_retention=api_log_retention, bars=progress)

        purged = run_with_database(database, purge)
    typer.echo(f"Purged {purged.records} expired idempotency record{_s(purged.records)}")
    typer.echo(f"Purged {purged.api_logs} API-log entr{'y' if purged.api_logs == 1 else 'ies'}")


def migrate(database: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """Create the database if needed and bring it to the newest schema."""
    with bars() as progress:
        run_with_database(database, nothing, progress=migration_progress(progress))
    typer.echo(f"Database {shown_database(database)} is at the newest schema")


def _s(count: int) -> str:
    return "" if count == 1 else "s"
