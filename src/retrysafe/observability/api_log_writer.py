"""The API-log sink of the service: records buffered in memory, inserted in batches.

A transaction per request would double the writes of a create, so the request
path only appends to a bounded buffer; a background task inserts what
accumulated every ``interval`` seconds, in one transaction per ``batch_size``
entries (on SQLite one unit of the writer's group commit, beside the requests').
When the buffer is full (the database is down or slower than the traffic) new
entries are dropped and counted in ``retrysafe_api_log_entries_dropped_total``:
losing log entries is better than slowing or failing the requests they describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from datetime import UTC, datetime

import asyncpg
import structlog
from sqlalchemy.exc import SQLAlchemyError

from retrysafe import ids
from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.database.schema import api_logs
from retrysafe.observability.metrics import Metrics
from retrysafe.observability.records import RequestRecord
from retrysafe.observability.redaction import loggable_body

__all__ = ["ApiLogWriter", "rfc3339"]

logger = structlog.get_logger("retrysafe.api_log")

_WRITE_FAILURES = (
    DatabaseUnavailable,
    SQLAlchemyError,
    sqlite3.Error,
    asyncpg.PostgresError,
    OSError,
)
"""What a batch insert may raise, per driver; each is retried next round, never fatal."""

MAX_PATH = 2048
"""Characters of a path or query string an entry keeps."""

COLUMNS = (
    "id",
    "organization_id",
    "api_key_id",
    "request_id",
    "method",
    "path",
    "query",
    "route",
    "status",
    "duration_ms",
    "idempotency_key",
    "outcome",
    "rate_limit",
    "error_code",
    "request_body",
    "response_body",
    "created_at",
)
"""The columns of ``api_logs`` a row of :meth:`ApiLogWriter._row` gives, in its order."""

ROWS_PER_TURN = 25
"""Entries a flush turns into rows before letting the event loop run others (about 1 ms)."""


def rfc3339(epoch: float) -> str:
    """Epoch seconds as the ``*_at`` text of every table (sorts as time does)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


class ApiLogWriter:
    """Buffers :class:`RequestRecord` s and inserts them in batches from a background task.

    :meth:`submit` is all a request pays. :meth:`start` and :meth:`stop` belong to
    the application's lifespan; ``stop`` writes out whatever is still buffered, so
    a graceful shutdown loses nothing.
    """

    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        *,
        interval: float = 0.5,
        capacity: int = 10_000,
        batch_size: int = 500,
        body_limit: int = 8192,
    ) -> None:
        self._db = db
        self._insert = db.prepare_insert(api_logs)
        self._metrics = metrics
        self._interval = interval
        self._capacity = capacity
        self._batch_size = batch_size
        self._body_limit = body_limit
        self._buffer: deque[tuple[str, RequestRecord]] = deque()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def pending(self) -> int:
        """Entries buffered and not written yet."""
        return len(self._buffer)

    def submit(self, record: RequestRecord) -> None:
        if len(self._buffer) >= self._capacity:
            self._metrics.api_log_dropped.inc()
            return
        # The id is taken now, so ids sort in the order requests finished.
        self._buffer.append((ids.new_id("log"), record))

    def start(self) -> None:
        """Start the background flushes on the running event loop."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="retrysafe-api-log-writer")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the background task, then write everything still buffered (within ``grace`` s)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(grace):
                while self._buffer:
                    if not await self.flush():
                        break
        except TimeoutError:
            logger.warning("api log entries lost at shutdown", count=len(self._buffer))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            await self.flush()

    async def flush(self) -> bool:
        """Insert everything buffered, one transaction per batch; False if the database failed.

        On failure the batch goes back to the front of the buffer (as far as the
        capacity allows) for the next round.
        """
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            rows = await self._rows(batch)
            try:
                await self._db.insert_many(self._insert, COLUMNS, rows)
            except _WRITE_FAILURES as exc:
                self._requeue(batch)
                self._metrics.dependency_error("database")
                if not self._failing:  # one warning per outage, not one per round
                    logger.warning("writing api log entries failed", error=str(exc))
                self._failing = True
                return False
            if self._failing:
                logger.info("writing api log entries works again")
                self._failing = False
            self._metrics.api_log_written.inc(len(rows))
        return True

    async def _rows(self, batch: list[tuple[str, RequestRecord]]) -> list[tuple[object, ...]]:
        """The rows of ``batch``, built a few at a time with the event loop's turns between.

        An entry's redaction is pure CPU on the loop (about 40 µs): a batch built in
        one go held every request back for its whole length (a flush of 900 entries
        stalled the loop for 11-27 ms, 4-7 ms built this way), and at full load a
        flush comes twice a second: that wait is what the slowest requests show.
        """
        rows: list[tuple[object, ...]] = []
        for start in range(0, len(batch), ROWS_PER_TURN):
            if start:
                await asyncio.sleep(0)
            rows.extend(
                self._row(log_id, record) for log_id, record in batch[start : start + ROWS_PER_TURN]
            )
        return rows

    def _requeue(self, batch: list[tuple[str, RequestRecord]]) -> None:
        room = self._capacity - len(self._buffer)
        kept = batch[:room] if room > 0 else []
        self._buffer.extendleft(reversed(kept))
        if len(kept) < len(batch):
            self._metrics.api_log_dropped.inc(len(batch) - len(kept))

    def _row(self, log_id: str, record: RequestRecord) -> tuple[object, ...]:
        """The entry's values in COLUMNS order: no dict per row, none to map back to order."""
        limit = self._body_limit
        return (
            log_id,
            record.organization_id,
            record.api_key_id,
            record.request_id,
            record.method[:16],
            record.path[:MAX_PATH],
            record.query[:MAX_PATH] or None,
            record.route[:255],
            record.status,
            round(record.duration_ms, 3),
            record.idempotency_key,
            record.outcome,
            record.rate_limit,
            record.error_code[:64] if record.error_code else None,
            loggable_body(record.request_body, record.request_content_type, limit),
            loggable_body(record.response_body, record.response_content_type, limit),
            rfc3339(record.started_at),
        )
