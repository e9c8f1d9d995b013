"""The SQL idempotency store: the claim, the handler's writes and the record in one transaction.

This is what makes a create exactly-once on SQLite and PostgreSQL: the response
is recorded in the same transaction as the handler's writes and sent only after
that commit, so a crash before the commit leaves nothing behind and the retry
executes, and a crash after it leaves a record the retry replays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import and_, delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from retrysafe.database.engine import Database, DatabaseUnavailable
from retrysafe.database.schema import idempotency_records as records
from retrysafe.idempotency.decisions import Decision, Execute, InFlight, TakeOver, judge
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)

_IN_PROGRESS = RecordStatus.IN_PROGRESS.value
_COMPLETED = RecordStatus.COMPLETED.value


class SqlIdempotencyStore:
    """Idempotency records in the service's own database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert: Any = sqlite.insert if db.is_sqlite else postgresql.insert
        # Keys being executed by this process. A second request with one of them is
        # answered 409 at once instead of queueing behind the first one's
        # transaction. Correctness never depends on this set: across processes the
        # database's own lock (SQLite's write lock, a PostgreSQL advisory lock)
        # keeps a key from running twice.
        self._running: set[RecordKey] = set()

    @asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        if key in self._running:
            yield InFlight(retry_after=1)
            return
        self._running.add(key)
        try:
            async with self._db.ambient_transaction() as conn:
                decision = await self._claim(conn, key, fingerprint, now, ttl)
                if not isinstance(decision, Execute):
                    await conn.rollback()
                yield decision
        finally:
            self._running.discard(key)

    async def _claim(
        self, conn: AsyncConnection, key: RecordKey, fingerprint: str, now: float, ttl: float
    ) -> Decision:
        if not self._db.is_sqlite:
            # Another process may hold an uncommitted claim on this key; its row is
            # invisible to us and INSERT would block on it. The advisory lock makes
            # that visible at once, so the answer is 409 rather than a wait.
            locked = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"{key.organization_id}\x1f{key.key}"},
            )
            if not locked:
                return InFlight(retry_after=1)
        fresh = {
            "fingerprint": fingerprint,
            "status": _IN_PROGRESS,
            "created_at": now,
            "expires_at": now + ttl,
            "locked_until": None,
            "lock_token": None,
            "recovery_point": None,
            "response_status": None,
            "response_content_type": None,
            "response_location": None,
            "response_body": None,
        }
        statement = self._insert(records).values(
            organization_id=key.organization_id, key=key.key, **fresh
        )
        # An expired record is overwritten in the same statement: the key is new again.
        statement = statement.on_conflict_do_update(
            index_elements=[records.c.organization_id, records.c.key],
            set_=fresh,
            where=records.c.expires_at <= now,
        ).returning(records.c.key)
        if (await conn.execute(statement)).first() is not None:
            return Execute(_SqlAttempt(conn, key, fingerprint, now, now + ttl, self._insert))
        existing = await _load(conn, key)
        verdict = judge(existing, fingerprint, now)
        if isinstance(verdict, TakeOver):
            await conn.execute(
                update(records)
                .where(_match(key))
                .values(locked_until=None, lock_token=None, status=_IN_PROGRESS)
            )
            return Execute(
                _SqlAttempt(conn, key, fingerprint, now, existing.expires_at, self._insert)
            )
        return verdict

    async def purge_expired(self, now: float) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(records).where(
                    records.c.expires_at <= now,
                    or_(records.c.locked_until.is_(None), records.c.locked_until <= now),
                )
            )
            return int(result.rowcount)


class _SqlAttempt:
    def __init__(
        self,
        conn: AsyncConnection,
        key: RecordKey,
        fingerprint: str,
        created_at: float,
        expires_at: float,
        insert: Any,
    ) -> None:
        self._conn = conn
        self._key = key
        self._fingerprint = fingerprint
        self._created_at = created_at
        self._expires_at = expires_at
        self._insert = insert

    async def complete(self, response: StoredResponse) -> None:
        stored = {
            "status": _COMPLETED,
            "response_status": response.status,
            "response_content_type": response.content_type,
            "response_location": response.location,
            "response_body": response.body,
        }
        try:
            if response.status < 400:
                await self._conn.execute(update(records).where(_match(self._key)).values(stored))
            else:
                # An error answer keeps none of the handler's writes, only the record.
                await self._conn.rollback()
                await self._conn.begin()
                await self._conn.execute(
                    self._insert(records)
                    .values(
                        organization_id=self._key.organization_id,
                        key=self._key.key,
                        fingerprint=self._fingerprint,
                        created_at=self._created_at,
                        expires_at=self._expires_at,
                        **stored,
                    )
                    .on_conflict_do_nothing()
                )
            await self._conn.commit()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def abandon(self) -> None:
        await self._conn.rollback()


def _match(key: RecordKey) -> Any:
    return and_(records.c.organization_id == key.organization_id, records.c.key == key.key)


async def _load(conn: AsyncConnection, key: RecordKey) -> IdempotencyRecord:
    row = (await conn.execute(select(records).where(_match(key)))).one()
    response = None
    if row.response_status is not None:
        response = StoredResponse(
            status=row.response_status,
            body=bytes(row.response_body or b""),
            content_type=row.response_content_type,
            location=row.response_location,
        )
    return IdempotencyRecord(
        key=key,
        fingerprint=row.fingerprint,
        status=RecordStatus(row.status),
        expires_at=row.expires_at,
        response=response,
        locked_until=row.locked_until,
        lock_token=row.lock_token,
        recovery_point=row.recovery_point,
    )
