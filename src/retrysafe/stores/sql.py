"""The SQL idempotency store: the claim, the handler's writes and the record in one transaction.

This is what makes a create exactly-once on SQLite and PostgreSQL: the response
is recorded in the same transaction as the handler's writes and sent only after
that commit, so a crash before the commit leaves nothing behind and the retry
executes, and a crash after it leaves a record the retry replays.

A handler with an effect outside the database splits that transaction at
recovery points (``checkpoint``). Each commits the phase's writes with the
record, which from then on is held by a lease (``locked_until``) and a fencing
token (``lock_token``) instead of by an open transaction: other requests see a
live lease and get 409; once it ran out, one of them takes the record over and
resumes from the last point; and the old holder, if it was only slow, finds
its token gone and writes nothing (:class:`LeaseLost`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, literal_column, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter, ColumnClause

from retrysafe.database.engine import AmbientTransaction, Database, DatabaseUnavailable, Prepared
from retrysafe.database.schema import idempotency_records as records
from retrysafe.database.sqlite_driver import BUSY
from retrysafe.idempotency.decisions import (
    Decision,
    Execute,
    InFlight,
    LeaseLost,
    Mismatch,
    Replay,
    Resumption,
    TakeOver,
    judge,
)
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)
from retrysafe.unique import random_hex

DEFAULT_LEASE_SECONDS = 60.0
"""How long a checkpointed record stays held without news from its holder."""

_IN_PROGRESS = RecordStatus.IN_PROGRESS.value
_COMPLETED = RecordStatus.COMPLETED.value
_THIS_RECORD = and_(
    records.c.organization_id == bindparam("org"), records.c.key == bindparam("p_key")
)
_OURS = and_(_THIS_RECORD, records.c.lock_token == bindparam("p_token"))
# Bind parameters are named p_<column>: SQLAlchemy reserves bare column names.
_RESPONSE_COLUMNS = (
    "response_status",
    "response_content_type",
    "response_location",
    "response_body",
)
_RESPONSE: dict[str, BindParameter[Any]] = {
    name: bindparam("p_" + name) for name in _RESPONSE_COLUMNS
}
_ONE: ColumnClause[Any] = literal_column("1")
# A live lease always wins over expiry: a record past its TTL is free only once no
# holder's lease lives either (the claim, the record and purge all use this rule).
_LEASE_OVER = or_(records.c.locked_until.is_(None), records.c.locked_until <= bindparam("now"))
_EXPIRED = and_(records.c.expires_at <= bindparam("now"), _LEASE_OVER)
# Statements are built once: constructing and cache-keying a Core statement per
# request costs more CPU than executing it.
_LOAD = select(records).where(_THIS_RECORD)
_LOADED_COLUMNS = tuple(column.name for column in records.c)
# Compare-and-set on the token that was judged: a slow holder completing between
# our read and this update must win, not be overwritten.
_TAKE_OVER = (
    update(records)
    .where(
        _THIS_RECORD,
        records.c.status == _IN_PROGRESS,
        records.c.lock_token.is_not_distinct_from(bindparam("p_stale_token")),
    )
    .values(locked_until=None, lock_token=bindparam("p_token"))
    .returning(_ONE)
)
_COMPLETE = (
    update(records)
    .where(_OURS)
    .values(status=_COMPLETED, locked_until=None, lock_token=None, **_RESPONSE)
    .returning(_ONE)
)
_CHECKPOINT = (
    update(records)
    .where(_OURS)
    .values(
        recovery_point=bindparam("p_point"),
        recovery_data=bindparam("p_data"),
        locked_until=bindparam("p_locked_until"),
        # Expiry never falls before the lease: the answer that follows the external
        # call is replayed at least until the lease would have ended.
        expires_at=case(
            (records.c.expires_at < bindparam("p_locked_until"), bindparam("p_locked_until")),
            else_=records.c.expires_at,
        ),
    )
    .returning(_ONE)
)
_RELEASE = update(records).where(_OURS).values(locked_until=bindparam("p_locked_until"))
_PURGE = delete(records).where(_EXPIRED)
_PG_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0))")


def _claim_statement(insert: Any) -> Any:
    """Claim a key, overwriting an expired record in the same statement (the key is new again).

    Expired means past its TTL with no live lease: a holder still working keeps its key.
    """
    fresh: dict[str, Any] = {
        "fingerprint": bindparam("p_fingerprint"),
        "status": _IN_PROGRESS,
        "created_at": bindparam("now"),
        "expires_at": bindparam("p_expires_at"),
        "locked_until": None,
        "lock_token": bindparam("p_token"),
        "recovery_point": None,
        "recovery_data": None,
        **{name: None for name in _RESPONSE_COLUMNS},
    }
    statement = insert(records).values(
        organization_id=bindparam("org"), key=bindparam("p_key"), **fresh
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.organization_id, records.c.key],
        set_=fresh,
        where=_EXPIRED,
    ).returning(_ONE)


def _record_statement(insert: Any) -> Any:
    """Record a finished answer after the claim's transaction was rolled back.

    The rollback undid the claim too, so the row is back as it was before it: absent,
    expired, or an earlier holder's with a lapsed lease (a take-over). Each of those
    is ours to overwrite, as the claim judged. Anything else means another request
    claimed the key in between; then nothing is written and no row comes back.
    """
    finished: dict[str, Any] = {
        "fingerprint": bindparam("p_fingerprint"),
        "status": _COMPLETED,
        "expires_at": bindparam("p_expires_at"),
        "locked_until": None,
        "lock_token": None,
        **_RESPONSE,
    }
    statement = insert(records).values(
        organization_id=bindparam("org"),
        key=bindparam("p_key"),
        created_at=bindparam("now"),
        **finished,
    )
    ours = or_(
        _EXPIRED,
        and_(records.c.status == _IN_PROGRESS, records.c.locked_until <= bindparam("now")),
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.organization_id, records.c.key], set_=finished, where=ours
    ).returning(_ONE)


class SqlIdempotencyStore:
    """Idempotency records in the service's own database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._db = db
        self.lease_seconds = lease_seconds
        insert = sqlite.insert if db.is_sqlite else postgresql.insert
        self._claim_sql = db.prepare(_claim_statement(insert))
        self._complete_sql = db.prepare(_COMPLETE)
        self._checkpoint_sql = db.prepare(_CHECKPOINT)
        self._record_sql = db.prepare(_record_statement(insert))
        # Every replay and every conflict loads the record: compiled once, like the claim.
        self._load_sql = db.prepare(_LOAD)
        # Keys whose claim transaction this process holds open. A second request
        # with one of them is answered 409 at once instead of queueing behind that
        # transaction. Correctness never depends on this set: across processes the
        # database's own lock (SQLite's write lock, a PostgreSQL advisory lock)
        # keeps a key from running twice. A key leaves the set at its first
        # checkpoint, when the lease takes over from the transaction.
        self._running: set[RecordKey] = set()

    @asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        if key in self._running:
            # Most often another replay of a completed key is being judged: this one
            # replays too. Only a claim still running leaves 409 as the answer.
            async with self._db.read() as reader:
                settled = await _settled(self._load_sql, reader, key, fingerprint, now)
            yield settled or InFlight(retry_after=1)
            return
        # A replay or a mismatch is decided by the committed record alone. On SQLite
        # it is read first, inline (microseconds, no thread hop), which spares those
        # requests the one write lock that would otherwise queue every replay behind
        # every create.
        row = self._load_sql.first_now({"org": key.organization_id, "p_key": key.key})
        if row is not BUSY:
            settled = _settled_by(_record_of(key, row), fingerprint, now)
            if settled is not None:
                yield settled
                return
        self._running.add(key)
        decision: Decision | None = None
        try:
            async with self._db.ambient_transaction() as ambient:
                conn = await ambient.connection()
                decision = await self._claim(ambient, conn, key, fingerprint, now, ttl)
                if not isinstance(decision, Execute):
                    await conn.rollback()
                yield decision
        finally:
            # After a checkpoint the key already left the set, and another request of
            # this process may have claimed it since: that entry is not ours to remove.
            if not (
                isinstance(decision, Execute)
                and isinstance(decision.attempt, _SqlAttempt)
                and decision.attempt.checkpointed
            ):
                self._running.discard(key)

    async def _claim(
        self,
        ambient: AmbientTransaction,
        conn: AsyncConnection,
        key: RecordKey,
        fingerprint: str,
        now: float,
        ttl: float,
    ) -> Decision:
        ids = {"org": key.organization_id, "p_key": key.key}
        if not self._db.is_sqlite:
            # Another process may hold an uncommitted claim on this key; its row is
            # invisible to us and INSERT would block on it. The advisory lock makes
            # that visible at once, so the answer is 409 rather than a wait.
            lock = f"{key.organization_id}\x1f{key.key}"
            if not await conn.scalar(_PG_TRY_LOCK, {"lock": lock}):
                return await _settled(self._load_sql, conn, key, fingerprint, now) or InFlight(
                    retry_after=1
                )
        token = random_hex(16)
        params = {
            **ids,
            "p_fingerprint": fingerprint,
            "now": now,
            "p_expires_at": now + ttl,
            "p_token": token,
        }
        if await self._claim_sql.first(conn, params) is not None:
            return Execute(_SqlAttempt(self, ambient, key, params, created_at=now))
        existing = await _load(self._load_sql, conn, key)
        verdict = judge(existing, fingerprint, now)
        if isinstance(verdict, TakeOver):
            cas = {**ids, "p_token": token, "p_stale_token": existing.lock_token}
            if not (await conn.execute(_TAKE_OVER, cas)).first():
                # The holder finished (or another request took over) since we read the
                # row: judge what is there now instead.
                verdict = judge(await _load(self._load_sql, conn, key), fingerprint, now)
                return InFlight(retry_after=1) if isinstance(verdict, TakeOver) else verdict
            params["p_expires_at"] = existing.expires_at
            return Execute(
                _SqlAttempt(
                    self,
                    ambient,
                    key,
                    params,
                    created_at=existing.created_at,
                    resumption=Resumption.of(existing),
                )
            )
        return verdict

    async def purge_expired(self, now: float) -> int:
        async with self._db.write() as conn:
            return int((await conn.execute(_PURGE, {"now": now})).rowcount)


class _SqlAttempt:
    """One claimed record, held first by the open transaction and, after a checkpoint, by
    the lease and the token."""

    def __init__(
        self,
        store: SqlIdempotencyStore,
        ambient: AmbientTransaction,
        key: RecordKey,
        params: dict[str, Any],
        *,
        created_at: float,
        resumption: Resumption | None = None,
    ) -> None:
        self._store = store
        self._ambient = ambient
        self._key = key
        self._params = params
        self._created_at = created_at
        # Computed on first use: most requests never ask, and it costs a hash.
        self._resumption = resumption
        self._released_at: float | None = None
        self.checkpointed = False
        """Whether a checkpoint committed: from then on every write is fenced by the token."""

    @property
    def resumption(self) -> Resumption:
        if self._resumption is None:
            self._resumption = Resumption.fresh(self._key, self._created_at)
        return self._resumption

    async def checkpoint(self, point: str, data: str | None, *, now: float) -> None:
        lease = self._store.lease_seconds
        params = {**self._params, "p_point": point, "p_data": data, "p_locked_until": now + lease}
        try:
            conn = await self._ambient.connection()
            await self._write_fenced(conn, self._store._checkpoint_sql, params)
            # The phase is durable; give back the connection and the write lock so the
            # external call that follows holds neither.
            await self._ambient.release()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        if not self.checkpointed:
            self.checkpointed = True
            self._store._running.discard(self._key)
        self._released_at = now
        self._resumption = Resumption(point, data, self.resumption.external_key)

    async def complete(self, response: StoredResponse) -> None:
        stored = {
            **self._params,
            "p_response_status": response.status,
            "p_response_content_type": response.content_type,
            "p_response_location": response.location,
            "p_response_body": response.body,
        }
        try:
            if response.status < 400:
                conn = await self._ambient.connection()
                await self._write_fenced(conn, self._store._complete_sql, stored)
                return
            # An error answer keeps none of the phase's writes, only the record.
            conn = await self._ambient.restart()
            if self.checkpointed:
                await self._write_fenced(conn, self._store._complete_sql, stored)
                return
            # Before any checkpoint the rollback undid the claim as well.
            if not await self._store._record_sql.rows(conn, stored):
                await self._ambient.release()
                raise LeaseLost("another request claimed this idempotency key meanwhile")
            await conn.commit()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def abandon(self) -> None:
        await self._ambient.release()
        if not self.checkpointed:
            return  # the rollback took the claim with it: the key is free again
        # Keep the recovery point, end the lease: the next retry resumes at once.
        params = {**self._params, "p_locked_until": self._released_at}
        try:
            async with self._store._db.transaction() as conn:
                await conn.execute(_RELEASE, params)
                await conn.commit()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def _write_fenced(self, conn: AsyncConnection, statement: Any, params: Any) -> None:
        """Run ``statement`` (fenced by our token) and commit, or raise :class:`LeaseLost`."""
        db = self._store._db
        if not self.checkpointed:
            # The claim's transaction has been open all along, so the row is still
            # ours: the statement and the commit can travel together.
            await db.execute_and_commit(conn, statement, params)
            return
        if not await statement.rows(conn, params):
            await self._ambient.release()
            raise LeaseLost("another request took this idempotency record over")
        await conn.commit()


async def _settled(
    loader: Prepared, conn: AsyncConnection, key: RecordKey, fingerprint: str, now: float
) -> Replay | Mismatch | None:
    """The answer when the committed record already decides it (replay or mismatch), else None."""
    return _settled_by(await _find(loader, conn, key), fingerprint, now)


def _settled_by(
    existing: IdempotencyRecord | None, fingerprint: str, now: float
) -> Replay | Mismatch | None:
    if existing is None or existing.expires_at <= now:
        return None
    verdict = judge(existing, fingerprint, now)
    return verdict if isinstance(verdict, Replay | Mismatch) else None


async def _load(loader: Prepared, conn: AsyncConnection, key: RecordKey) -> IdempotencyRecord:
    record = await _find(loader, conn, key)
    if record is None:  # pragma: no cover - callers load only a key whose claim conflicted
        raise LookupError(f"no idempotency record for {key}")
    return record


async def _find(
    loader: Prepared, conn: AsyncConnection, key: RecordKey
) -> IdempotencyRecord | None:
    return _record_of(key, await loader.first(conn, {"org": key.organization_id, "p_key": key.key}))


def _record_of(key: RecordKey, values: tuple[Any, ...] | None) -> IdempotencyRecord | None:
    """The record a row of ``_LOAD`` holds (``None`` for no row)."""
    if values is None:
        return None
    row = SimpleNamespace(**dict(zip(_LOADED_COLUMNS, values, strict=True)))
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
        recovery_data=row.recovery_data,
        created_at=row.created_at,
    )
