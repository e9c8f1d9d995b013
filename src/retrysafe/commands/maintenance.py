"""``purge-expired`` and ``migrate`` as steps a progress bar can follow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select

from retrysafe.commands.progress import Bars
from retrysafe.database import Database
from retrysafe.database.migrate import MigrationProgress
from retrysafe.database.schema import idempotency_records
from retrysafe.observability.retention import count_expired_api_logs, purge_api_logs
from retrysafe.stores.sql import SqlIdempotencyStore

__all__ = ["MIGRATION_BAR", "Purged", "migration_progress", "purge_all"]

RECORDS_BAR = "Idempotency records"
API_LOGS_BAR = "API-log entries"
MIGRATION_BAR = "Migrating"

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
