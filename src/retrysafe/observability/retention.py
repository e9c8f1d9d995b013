"""API-log retention: delete entries older than ``--api-log-retention``, a batch at a time."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Delete, bindparam, delete, func, select

from retrysafe.database import Database
from retrysafe.database.schema import api_logs
from retrysafe.observability.api_log_writer import rfc3339

__all__ = ["BATCH_SIZE", "count_expired_api_logs", "purge_api_logs"]

BATCH_SIZE = 1000
"""Entries deleted per transaction: short transactions keep the SQLite write lock free."""

_EXPIRED = api_logs.c.created_at < bindparam("cutoff")
_COUNT = select(func.count()).select_from(api_logs).where(_EXPIRED)


def _purge_statement(batch_size: int) -> Delete:
    doomed = select(api_logs.c.id).where(_EXPIRED).limit(batch_size).scalar_subquery()
    return delete(api_logs).where(api_logs.c.id.in_(doomed))


async def count_expired_api_logs(db: Database, *, now: float, retention: float) -> int:
    """How many entries :func:`purge_api_logs` would delete now (for a progress bar)."""
    async with db.read() as conn:
        return int((await conn.execute(_COUNT, {"cutoff": rfc3339(now - retention)})).scalar_one())


async def purge_api_logs(
    db: Database,
    *,
    now: float,
    retention: float,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete entries created more than ``retention`` seconds before ``now``; return how many.

    One transaction per ``batch_size`` entries, so a large backlog never holds the
    write lock for long; ``on_batch`` hears each batch's count.
    """
    statement = _purge_statement(batch_size)
    cutoff = {"cutoff": rfc3339(now - retention)}
    total = 0
    while True:
        async with db.write() as conn:
            deleted = int((await conn.execute(statement, cutoff)).rowcount)
        total += deleted
        if on_batch is not None:
            on_batch(deleted)
        if deleted < batch_size:
            return total
