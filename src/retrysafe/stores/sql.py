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

from sqlalchemy import and_, bindparam, delete, literal_column, or_, select, text, update
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
_THIS_RECORD = and_(
    records.c.organization_id == bindparam("org"), records.c.key == bindparam("p_key")
)
# Bind parameters are named p_<column>: SQLAlchemy reserves bare column names.
_RESPONSE_COLUMNS = (
    "response_status",
    "response_content_type",
    "response_location",
    "response_body",
)
# Statements are built once: constructing and cache-keying a Core statement per
# request costs more CPU than executing it.
_LOAD = select(records).where(_THIS_RECORD)
_TAKE_OVER = (
    update(records)
    .where(_THIS_RECORD)
    .values(locked_until=None, lock_token=None, status=_IN_PROGRESS)
)
_COMPLETE = (
    update(records)
    .where(_THIS_RECORD)
    .values(status=_COMPLETED, **{name: bindparam("p_" + name) for name in _RESPONSE_COLUMNS})
)
_PURGE = delete(records).where(
    records.c.expires_at <= bindparam("now"),
    or_(records.c.locked_until.is_(None), records.c.locked_until <= bindparam("now")),
)
_PG_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0))")


def _claim_statement(insert: Any) -> Any:
    """Claim a key, overwriting an expired record in the same statement (the key is new again)."""
    fresh: dict[str, Any] = {
        "fingerprint": bindparam("p_fingerprint"),
        "status": _IN_PROGRESS,
        "created_at": bindparam("now"),
        "expires_at": bindparam("p_expires_at"),
        "locked_until": None,
        "lock_token": None,
        "recovery_point": None,
        **{name: None for name in _RESPONSE_COLUMNS},
    }
    statement = insert(records).values(
        organization_id=bindparam("org"), key=bindparam("p_key"), **fresh
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.organization_id, records.c.key],
        set_=fresh,
        where=records.c.expires_at <= bindparam("now"),
    ).returning(literal_column("1"))


def _record_statement(insert: Any) -> Any:
    """Insert a finished record outright (after the handler's writes were rolled back)."""
    return (
        insert(records)
        .values(
            organization_id=bindparam("org"),
            key=bindparam("p_key"),
            fingerprint=bindparam("p_fingerprint"),
            status=_COMPLETED,
            created_at=bindparam("now"),
            expires_at=bindparam("p_expires_at"),
            **{name: bindparam("p_" + name) for name in _RESPONSE_COLUMNS},
        )
        .on_conflict_do_nothing()
    )


class SqlIdempotencyStore:
    """Idempotency records in the service's own database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        insert = sqlite.insert if db.is_sqlite else postgresql.insert
        self._claim_sql = db.prepare(_claim_statement(insert))
        self._complete_sql = db.prepare(_COMPLETE)
        self._record_sql = db.prepare(_record_statement(insert))
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
        ids = {"org": key.organization_id, "p_key": key.key}
        if not self._db.is_sqlite:
            # Another process may hold an uncommitted claim on this key; its row is
            # invisible to us and INSERT would block on it. The advisory lock makes
            # that visible at once, so the answer is 409 rather than a wait.
            lock = f"{key.organization_id}\x1f{key.key}"
            if not await conn.scalar(_PG_TRY_LOCK, {"lock": lock}):
                return InFlight(retry_after=1)
        params = {**ids, "p_fingerprint": fingerprint, "now": now, "p_expires_at": now + ttl}
        if await self._claim_sql.first(conn, params) is not None:
            return Execute(_SqlAttempt(self, conn, params))
        existing = await _load(conn, key)
        verdict = judge(existing, fingerprint, now)
        if isinstance(verdict, TakeOver):
            await conn.execute(_TAKE_OVER, ids)
            return Execute(_SqlAttempt(self, conn, {**params, "p_expires_at": existing.expires_at}))
        return verdict

    async def purge_expired(self, now: float) -> int:
        async with self._db.write() as conn:
            return int((await conn.execute(_PURGE, {"now": now})).rowcount)


class _SqlAttempt:
    def __init__(
        self, store: SqlIdempotencyStore, conn: AsyncConnection, params: dict[str, Any]
    ) -> None:
        self._store = store
        self._conn = conn
        self._params = params

    async def complete(self, response: StoredResponse) -> None:
        stored = {
            **self._params,
            "p_response_status": response.status,
            "p_response_content_type": response.content_type,
            "p_response_location": response.location,
            "p_response_body": response.body,
        }
        db = self._store._db
        try:
            if response.status < 400:
                await db.execute_and_commit(self._conn, self._store._complete_sql, stored)
                return
            # An error answer keeps none of the handler's writes, only the record.
            await self._conn.rollback()
            await self._conn.begin()
            await db.execute_and_commit(self._conn, self._store._record_sql, stored)
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def abandon(self) -> None:
        await self._conn.rollback()


async def _load(conn: AsyncConnection, key: RecordKey) -> IdempotencyRecord:
    row = (await conn.execute(_LOAD, {"org": key.organization_id, "p_key": key.key})).one()
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
