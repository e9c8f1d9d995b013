"""The SQL idempotency store: the claim, the handler's writes and the record in one transaction.

This is what makes a create exactly-once on SQLite and PostgreSQL: the response
is recorded in the same transaction as the handler's writes and sent only after
that commit, so a crash before the commit leaves nothing behind and the retry
executes, and a crash after it leaves a record the retry replays.

Two ways to get there:

- **Claim first** (:meth:`SqlIdempotencyStore.attempt`): the key is claimed in a
  transaction opened before the handler runs; the handler's statements join it
  as they come and the record commits with them. A 4xx/5xx answer rolls back to
  the savepoint taken right after the claim, so the key is never let go between
  the handler's writes and the record.
- **Claim at the commit** (:meth:`SqlIdempotencyStore.deferred_attempt`): on a
  new key nothing is written while the handler runs; its inserts
  (:meth:`~retrysafe.database.Database.writes`) wait, and once the response is
  known one unit writes the record (claimed as completed, with the response) and
  the inserts together. On SQLite that unit is one savepoint of a group commit
  shared with every other request ready at that moment; on PostgreSQL one
  transaction. If the key turned out to be taken, nothing of the request is kept
  and it is answered from the record that won (:class:`Superseded`); if one of
  the inserts met a taken unique key, the request runs again claiming first
  (:class:`RunAgain`), and the handler answers that conflict itself. A handler
  that needs its transaction earlier (a write whose result it reads, a
  checkpoint) gets it: the key is claimed there, the waiting inserts run, and the
  rest is the claim-first path.

A handler with an effect outside the database splits the transaction at
recovery points (``checkpoint``). Each commits the phase's writes with the
record, which from then on is held by a lease (``locked_until``) and a fencing
token (``lock_token``) instead of by an open transaction: other requests see a
live lease and get 409; once it ran out, one of them takes the record over and
resumes from the last point; and the old holder, if it was only slow, finds
its token gone and writes nothing (:class:`LeaseLost`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg
from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from retrysafe.database.engine import (
    Database,
    DatabaseUnavailable,
    InsertConflict,
    Prepared,
    PreparedInsert,
    QueuedInsert,
    _insert_all,
)
from retrysafe.database.key_locks import KeyLocks, open_key_locks
from retrysafe.database.schema import idempotency_records as records
from retrysafe.database.sqlite_driver import BUSY, is_busy
from retrysafe.idempotency.decisions import (
    Decision,
    Execute,
    InFlight,
    LeaseLost,
    Mismatch,
    Replay,
    Resumption,
    RunAgain,
    Superseded,
    TakeOver,
    judge,
)
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)
from retrysafe.idempotency.store import Prefetched
from retrysafe.unique import random_hex

__all__ = ["DEFAULT_LEASE_SECONDS", "SqlIdempotencyStore"]

DEFAULT_LEASE_SECONDS = 60.0
"""How long a checkpointed record stays held without news from its holder."""

_RECORD_AGAIN_TRIES = 20
_RECORD_AGAIN_PAUSE = 0.05

PURGE_BATCH = 1000
"""Expired records deleted per transaction, so a purge never holds the writer for long."""

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
_RESPONSE: dict[str, Any] = {name: bindparam("p_" + name) for name in _RESPONSE_COLUMNS}
_ONE: Any = literal_column("1")
# A key is free for a new request when its record expired and no holder's lease is
# still running: a live lease wins over expiry (a holder past the TTL is still working).
_FREE = and_(
    records.c.expires_at <= bindparam("now"),
    or_(records.c.locked_until.is_(None), records.c.locked_until <= bindparam("now")),
)
# Statements are built once: constructing and cache-keying a Core statement per
# request costs more CPU than executing it.
_LOAD = select(records).where(_THIS_RECORD)
_Loaded = namedtuple("_Loaded", [column.name for column in records.c])  # type: ignore[misc]
"""A row of ``_LOAD`` by column name: read on every replay, so no dict per row."""
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
_PURGE = delete(records).where(
    tuple_(records.c.organization_id, records.c.key).in_(
        select(records.c.organization_id, records.c.key).where(_FREE).limit(PURGE_BATCH)
    )
)
_PG_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0))")
# Taken right after the claim: an error answer rolls back to here, so the handler's
# writes go and the claim stays, and the record is written without letting go of the key.
_SAVEPOINT = text("SAVEPOINT retrysafe_claim")
_ROLLBACK_TO_SAVEPOINT = text("ROLLBACK TO SAVEPOINT retrysafe_claim")


def _claim_statement(insert: Any) -> Any:
    """Claim a key, overwriting a record the key is free of in the same statement."""
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
        index_elements=[records.c.organization_id, records.c.key], set_=fresh, where=_FREE
    ).returning(_ONE)


def _completed_claim_statement(insert: Any) -> Any:
    """Claim a key and record its answer in one statement: the deferred request's record.

    It writes only where the claim-first path could have claimed (no record, or one
    the key is free of); otherwise no row comes back and the record that is there
    decides the answer.
    """
    finished: dict[str, Any] = {
        "fingerprint": bindparam("p_fingerprint"),
        "status": _COMPLETED,
        "created_at": bindparam("now"),
        "expires_at": bindparam("p_expires_at"),
        "locked_until": None,
        "lock_token": None,
        "recovery_point": None,
        "recovery_data": None,
        **_RESPONSE,
    }
    statement = insert(records).values(
        organization_id=bindparam("org"), key=bindparam("p_key"), **finished
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.organization_id, records.c.key], set_=finished, where=_FREE
    ).returning(_ONE)


class _Unread:
    """The committed record was not read yet (the store reads it itself)."""


_UNREAD = _Unread()
_Row = tuple[Any, ...] | None | _Unread


@dataclass(frozen=True, slots=True)
class _Claim:
    """A key claimed in the open transaction, with what its attempt needs."""

    params: dict[str, Any]
    created_at: float
    resumption: Resumption | None = None


class _KeyTaken(Exception):
    """The deferred record met a record it may not overwrite: the unit rolls back."""


class SqlIdempotencyStore:
    """Idempotency records in the service's own database (SQLite or PostgreSQL).

    Built on a :class:`~retrysafe.database.Database` the application shares (its
    handlers' writes join the attempt's transaction through it), or with
    :meth:`from_url` on one of its own. Inside an attempt, ``async with
    store.database.write() as conn`` is the attempt's open transaction (an
    ``AsyncConnection``; on PostgreSQL ``(await conn.get_raw_connection())
    .driver_connection`` is its asyncpg connection): what is written there commits
    with the record, after the response was captured, or not at all.
    """

    def __init__(self, db: Database, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._db = db
        self._owns_database = False
        self.lease_seconds = lease_seconds
        insert = sqlite.insert if db.is_sqlite else postgresql.insert
        self._claim_sql = db.prepare(_claim_statement(insert))
        self._completed_claim_sql = db.prepare(_completed_claim_statement(insert))
        self._complete_sql = db.prepare(_COMPLETE)
        self._checkpoint_sql = db.prepare(_CHECKPOINT)
        self._take_over_sql = db.prepare(_TAKE_OVER)
        self._savepoint_sql = db.prepare(_SAVEPOINT)
        self._rollback_to_savepoint_sql = db.prepare(_ROLLBACK_TO_SAVEPOINT)
        # Every replay and every conflict loads the record: compiled once, like the claim.
        self._load_sql = db.prepare(_LOAD)
        self._pg_units = _PgUnits()
        # SQLite on a file: a request holds its key's lock (see key_locks) instead of
        # holding the file's write lock from its claim to its commit.
        self._key_locks: KeyLocks | None = (
            open_key_locks(db.sqlite_path) if db.sqlite_path is not None else None
        )
        # Keys an attempt of this process is running. A second request with one of
        # them is answered 409 at once instead of queueing behind the first (or, for
        # a deferred claim, running beside it). Correctness never depends on this
        # set: across processes the database decides (SQLite's write lock, a
        # PostgreSQL advisory lock, the record's unique key). A key leaves the set at
        # its first checkpoint, when the lease takes over from the transaction.
        self._running: set[RecordKey] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        pool_size: int = 10,
        sqlite_synchronous: str = "full",
    ) -> SqlIdempotencyStore:
        """A store on a :class:`Database` of its own (``sqlite:///…`` or ``postgresql://…``).

        The schema must exist (``retrysafe migrate --database URL``); :meth:`aclose`
        disposes of the database.
        """
        db = Database(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        store = cls(db, lease_seconds=lease_seconds)
        store._owns_database = True
        return store

    @property
    def database(self) -> Database:
        """The database the records live in, whose transactions attempts make ambient."""
        return self._db

    async def aclose(self) -> None:
        """Dispose of the database if :meth:`from_url` made it; otherwise its owner does."""
        if self._key_locks is not None:
            self._key_locks.close()
        if self._owns_database:
            await self._db.dispose()

    def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AbstractAsyncContextManager[Decision]:
        return self._attempt(key, fingerprint, now, ttl, _UNREAD)

    def deferred_attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AbstractAsyncContextManager[Decision]:
        """See :meth:`~retrysafe.idempotency.store.DeferringIdempotencyStore.deferred_attempt`."""
        return self._deferred_attempt(key, fingerprint, now, ttl, _UNREAD)

    def prefetched_attempt(
        self, prefetched: Prefetched, fingerprint: str, *, now: float, ttl: float, deferred: bool
    ) -> AbstractAsyncContextManager[Decision]:
        """See :class:`~retrysafe.idempotency.store.PrefetchingIdempotencyStore`.

        ``prefetched.row`` is a row of :meth:`record_columns`' shape, read outside any
        transaction (what ``attempt`` would read first), e.g. joined to the API-key
        lookup by :class:`~retrysafe.service.authenticator.DatabaseAuthenticator`.
        """
        key, row = prefetched.key, prefetched.row
        if key not in self._running and not isinstance(row, _Unread):
            # What the row alone decides, as both openers would decide it first, is
            # answered without their generator machinery: a replay or a mismatch, and
            # a deferred request's free key (the create's path).
            existing = _record_of(key, row)
            settled = _settled_by(existing, fingerprint, now)
            if settled is not None:
                return nullcontext(settled)
            if deferred and (existing is None or _is_free(existing, now)):
                return self._deferred_new(key, fingerprint, now, ttl)
        opener = self._deferred_attempt if deferred else self._attempt
        return opener(key, fingerprint, now, ttl, row)

    @staticmethod
    def record_columns() -> tuple[Any, ...]:
        """The columns, in order, of the committed-record row :meth:`prefetched_attempt` takes."""
        return tuple(records.c)

    @asynccontextmanager
    async def _attempt(
        self, key: RecordKey, fingerprint: str, now: float, ttl: float, committed: _Row
    ) -> AsyncIterator[Decision]:
        if key in self._running:
            yield await self._judged_while_running(key, fingerprint, now)
            return
        if self._key_locks is not None and isinstance(committed, _Unread):
            # SQLite on a file: the record is read once, inline, under the key's lock,
            # where a replay or a mismatch is decided as well as a new key. Reading it
            # before the lock too would only be read again under it (another process
            # may commit the key in between), and each inline read hands the GIL to
            # whichever thread waits for it: about 30 µs of CPU beside a threaded app.
            async with self._locked(self._key_locks, key, fingerprint, now, ttl) as decision:
                yield decision
            return
        # A replay or a mismatch is decided by the committed record alone. On SQLite
        # it is read first, inline (microseconds, no thread hop), which spares those
        # requests the writer that would otherwise queue every replay behind every
        # create. A record read already (with the API key) stands for that read.
        row = self._load_sql.first_now(_ids(key)) if isinstance(committed, _Unread) else committed
        if row is not BUSY:
            settled = _settled_by(_record_of(key, row), fingerprint, now)
            if settled is not None:
                yield settled
                return
        if self._key_locks is not None:
            async with self._locked(self._key_locks, key, fingerprint, now, ttl) as decision:
                yield decision
            return
        async with self._claimed_first(key, fingerprint, now, ttl) as decision:
            yield decision

    @asynccontextmanager
    async def _deferred_attempt(
        self, key: RecordKey, fingerprint: str, now: float, ttl: float, committed: _Row
    ) -> AsyncIterator[Decision]:
        if key in self._running:
            yield await self._judged_while_running(key, fingerprint, now)
            return
        row = await self._committed_row(key) if isinstance(committed, _Unread) else committed
        existing = _record_of(key, row)
        if existing is not None and not _is_free(existing, now):
            # A record that is not settled (in flight, a lease to take over) is judged
            # by the claim-first path, in its transaction.
            settled = _settled_by(existing, fingerprint, now)
            if settled is not None:
                yield settled
                return
            if self._key_locks is not None:
                locks = self._key_locks
                async with self._locked(
                    locks, key, fingerprint, now, ttl, deferred=True
                ) as decision:
                    yield decision
                return
            async with self._claimed_first(key, fingerprint, now, ttl) as decision:
                yield decision
            return
        async with self._deferred_new(key, fingerprint, now, ttl) as decision:
            yield decision

    def _deferred_new(self, key: RecordKey, fingerprint: str, now: float, ttl: float) -> _Executing:
        """A deferred request on a free key: run it, its claim made where it commits."""
        params = _claim_params(key, fingerprint, now, ttl)
        # Run without the key's lock, as on PostgreSQL: it is tried where the key is
        # claimed (the commit's unit, or the handler's first write).
        key_lock = None if self._key_locks is None else _KeyLock(self._key_locks, key)
        attempt = _SqlAttempt(
            self, key, fingerprint, params, created_at=now, ttl=ttl, key_lock=key_lock
        )
        return self._executing(attempt)

    @asynccontextmanager
    async def _locked(
        self,
        locks: KeyLocks,
        key: RecordKey,
        fingerprint: str,
        now: float,
        ttl: float,
        *,
        deferred: bool = False,
    ) -> AsyncIterator[Decision]:
        """SQLite: run the request holding its key's lock, claiming only at its first write.

        The record is read again under the lock (another process may have committed
        the key meanwhile). A new key then runs with nothing written: a handler that
        never writes here is recorded by one unit of the group commit, and one that
        does claims the key in its transaction at its first write, as the deferred
        path does, except that a claim-first request (``deferred`` False) never queues
        its writes: a write meeting a taken key must fail where the handler makes it,
        not make a handler with outside effects run again. A record still held (a
        lease, one to take over) is claimed in a transaction, as without the locks.
        Every claimer of the key holds its lock, so no other process claims it
        meanwhile; the lock goes at the end, or at the first checkpoint, where the
        record's lease takes over.
        """
        key_lock = _KeyLock(locks, key)
        if not key_lock.hold():
            yield await self._judged_while_running(key, fingerprint, now)
            return
        try:
            row = self._load_sql.first_now(_ids(key))
            existing = None if row is BUSY else _record_of(key, row)
            if row is BUSY or (existing is not None and not _is_free(existing, now)):
                settled = _settled_by(existing, fingerprint, now)
                if settled is not None:
                    # Released before the answer is sent: the replays of one key do
                    # not wait for each other.
                    key_lock.release()
                    yield settled
                    return
                async with self._claimed_first(
                    key, fingerprint, now, ttl, key_lock=key_lock
                ) as decision:
                    yield decision
                return
            params = _claim_params(key, fingerprint, now, ttl)
            attempt = _SqlAttempt(
                self,
                key,
                fingerprint,
                params,
                created_at=now,
                ttl=ttl,
                defer_writes=deferred,
                key_lock=key_lock,
            )
            async with self._executing(attempt) as decision:
                yield decision
        finally:
            key_lock.release()

    def _executing(self, attempt: _SqlAttempt) -> _Executing:
        """Run ``attempt``, claimed or still to be claimed, as its key's one runner here."""
        return _Executing(self, attempt)

    async def purge_expired(self, now: float) -> int:
        purged = 0
        while True:
            async with self._db.write() as conn:
                deleted = int((await conn.execute(_PURGE, {"now": now})).rowcount)
            purged += deleted
            if deleted < PURGE_BATCH:
                return purged

    @asynccontextmanager
    async def _claimed_first(
        self,
        key: RecordKey,
        fingerprint: str,
        now: float,
        ttl: float,
        *,
        key_lock: _KeyLock | None = None,
    ) -> AsyncIterator[Decision]:
        """Claim ``key`` in a transaction opened now; the request runs inside it."""
        self._running.add(key)
        attempt: _SqlAttempt | None = None
        try:
            scope = self._db.transaction()
            conn = await scope.__aenter__()
            try:
                claim = await self._claim(conn, key, fingerprint, now, ttl, take_over=True)
                if isinstance(claim, _Claim):
                    await self._savepoint_sql.rows(conn, {})
            except BaseException:
                await scope.__aexit__(None, None, None)  # rolls back
                raise
            if not isinstance(claim, _Claim):
                await scope.__aexit__(None, None, None)
                yield claim
                return
            attempt = _SqlAttempt(
                self,
                key,
                fingerprint,
                claim.params,
                created_at=claim.created_at,
                ttl=ttl,
                resumption=claim.resumption,
                open_transaction=(scope, conn),
                key_lock=key_lock,
            )
            with self._db.joined(attempt):
                yield Execute(attempt)
        finally:
            if attempt is not None:
                await attempt.close()
            # After a checkpoint the key already left the set, and another request of
            # this process may have claimed it since: that entry is not ours to remove.
            if attempt is None or not attempt.checkpointed:
                self._running.discard(key)

    async def _judged_while_running(
        self, key: RecordKey, fingerprint: str, now: float
    ) -> Replay | Mismatch | InFlight:
        # Most often another replay of a completed key is being judged: this one
        # replays too. Only a claim still running leaves 409 as the answer.
        existing = _record_of(key, await self._committed_row(key))
        return _settled_by(existing, fingerprint, now) or InFlight(retry_after=1)

    async def _committed_row(self, key: RecordKey) -> tuple[Any, ...] | None:
        """The committed record's row (None when there is none), inline where the driver allows."""
        return await self._db.first_committed(self._load_sql, _ids(key))

    async def _claim(
        self,
        conn: AsyncConnection,
        key: RecordKey,
        fingerprint: str,
        now: float,
        ttl: float,
        *,
        take_over: bool,
    ) -> _Claim | Replay | Mismatch | InFlight:
        """Claim ``key`` in ``conn``'s transaction, or say what the record there decides."""
        if not self._db.is_sqlite:
            # Another process may hold an uncommitted claim on this key; its row is
            # invisible to us and INSERT would block on it. The advisory lock makes
            # that visible at once, so the answer is 409 rather than a wait.
            lock = f"{key.organization_id}\x1f{key.key}"
            if not await conn.scalar(_PG_TRY_LOCK, {"lock": lock}):
                return await _settled(self._load_sql, conn, key, fingerprint, now) or InFlight(
                    retry_after=1
                )
        params = _claim_params(key, fingerprint, now, ttl)
        if await self._claim_sql.first(conn, params) is not None:
            return _Claim(params, created_at=now)
        existing = await _load(self._load_sql, conn, key)
        verdict = judge(existing, fingerprint, now)
        if not isinstance(verdict, TakeOver):
            return verdict
        if not take_over:
            # Only a request that has not started may resume another's work.
            return InFlight(retry_after=1)
        cas = {**_ids(key), "p_token": params["p_token"], "p_stale_token": existing.lock_token}
        if not await self._take_over_sql.first(conn, cas):
            # The holder finished (or another request took over) since we read the
            # row: judge what is there now instead.
            verdict = judge(await _load(self._load_sql, conn, key), fingerprint, now)
            return InFlight(retry_after=1) if isinstance(verdict, TakeOver) else verdict
        params["p_expires_at"] = existing.expires_at
        return _Claim(params, created_at=existing.created_at, resumption=Resumption.of(existing))

    async def _commit_deferred(
        self, attempt: _SqlAttempt, stored: dict[str, Any], inserts: list[QueuedInsert]
    ) -> None:
        """Write the record, claimed as completed, and ``inserts`` as one unit, or raise.

        :class:`Superseded` when the key was taken; :class:`RunAgain` when an insert
        conflicted. Either way nothing of the unit was written.
        """
        if self._db.writer is not None:
            if attempt.key_lock is not None and not attempt.key_lock.hold():
                raise Superseded(await self._verdict_of_committed(attempt))
            sql = self._completed_claim_sql
            unit = partial(_record_and_insert, sql.sql, sql.values(stored), inserts)
            try:
                await self._db.writer.run(unit)
            except _KeyTaken:
                raise Superseded(await self._verdict_of_committed(attempt)) from None
            except (InsertConflict, sqlite3.IntegrityError):
                raise RunAgain() from None
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise DatabaseUnavailable(str(exc)) from exc
                raise
            return
        statement = self._pg_units.statement(inserts)
        values = _pg_unit_values(attempt.key, stored, inserts)
        async with self._db.raw() as conn:
            try:
                claimed = (await conn.fetchrow(statement, *values))["claimed"]
            except (asyncpg.DivisionByZeroError, asyncpg.IntegrityConstraintViolationError):
                # An insert met a taken unique key (the division by its empty RETURNING,
                # see _PgUnits) or broke a constraint: the statement, the record with it,
                # was rolled back.
                raise RunAgain() from None
        if not claimed:
            raise Superseded(await self._verdict_of_committed(attempt))

    async def _commit_record_again(self, attempt: _SqlAttempt, stored: dict[str, Any]) -> None:
        """Record an answer whose claim was lost with its connection (see ``complete``).

        The server may not have noticed the lost connection yet, so its advisory lock
        can still be held for a moment: an in-flight verdict with nothing committed
        is tried again briefly instead of being answered 409.
        """
        for _ in range(_RECORD_AGAIN_TRIES - 1):
            try:
                await self._commit_deferred(attempt, stored, [])
                return
            except Superseded as superseded:
                if not isinstance(superseded.decision, InFlight):
                    raise
            await asyncio.sleep(_RECORD_AGAIN_PAUSE)
        await self._commit_deferred(attempt, stored, [])

    async def _verdict_of_committed(self, attempt: _SqlAttempt) -> Replay | Mismatch | InFlight:
        return _verdict_on(_record_of(attempt.key, await self._committed_row(attempt.key)), attempt)

    async def _verdict_in(
        self, conn: AsyncConnection, attempt: _SqlAttempt
    ) -> Replay | Mismatch | InFlight:
        return _verdict_on(await _find(self._load_sql, conn, attempt.key), attempt)


_PG_CASTS: dict[type, str] = {str: "varchar", int: "integer", float: "float8", bytes: "bytea"}
_PG_RECORD_UNIT = (
    "WITH claim AS (INSERT INTO idempotency_records (organization_id, key, fingerprint, status,"
    " created_at, expires_at, locked_until, lock_token, recovery_point, recovery_data,"
    " response_status, response_content_type, response_location, response_body)"
    " SELECT $2::varchar, $3::varchar, $4::varchar, 'completed', $5::float8, $6::float8,"
    " NULL, NULL, NULL, NULL, $7::integer, $8::varchar, $9::text, $10::bytea"
    " WHERE pg_try_advisory_xact_lock(hashtextextended($1::text, 0))"
    " ON CONFLICT (organization_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
    " status = EXCLUDED.status, created_at = EXCLUDED.created_at,"
    " expires_at = EXCLUDED.expires_at, locked_until = NULL, lock_token = NULL,"
    " recovery_point = NULL, recovery_data = NULL,"
    " response_status = EXCLUDED.response_status,"
    " response_content_type = EXCLUDED.response_content_type,"
    " response_location = EXCLUDED.response_location, response_body = EXCLUDED.response_body"
    " WHERE idempotency_records.expires_at <= $5::float8"
    " AND (idempotency_records.locked_until IS NULL"
    " OR idempotency_records.locked_until <= $5::float8)"
    " RETURNING 1)"
)
_PG_RECORD_PARAMETERS = 10
_PG_QUOTE = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


class _PgUnits:
    """The deferred request's unit on PostgreSQL as one statement, built once per shape.

    A data-modifying CTE: the record claimed as completed where the key is free,
    and each insert only if that claim wrote a row; one round trip, one implicit
    transaction. The claim first tries the key's transaction-scoped advisory lock,
    the one a claim-first request holds while it runs, so a unit meeting another
    holder of the key claims nothing and is answered 409 (or the replay) at once,
    instead of waiting on that holder's uncommitted record; the lock goes with the
    statement's commit. (The statement's table locks come before the try: under a
    lock that stops writes to the tables themselves, a migration's, the unit waits
    with every other write and is answered when it may run.) The result says
    whether the claim was had; an insert that met a taken unique key makes the
    statement divide by its empty ``RETURNING``, and that error rolls everything
    back: the record is never kept without its rows.
    """

    def __init__(self) -> None:
        self._statements: dict[tuple[tuple[PreparedInsert, tuple[str, ...]], ...], str] = {}

    def statement(self, inserts: list[QueuedInsert]) -> str:
        shape = tuple((insert, tuple(row)) for insert, row, _ in inserts)
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = _pg_unit_statement(shape)
        return statement


def _pg_unit_statement(shape: tuple[tuple[PreparedInsert, tuple[str, ...]], ...]) -> str:
    parts = [_PG_RECORD_UNIT]
    checks = []
    number = _PG_RECORD_PARAMETERS
    quote = _PG_QUOTE.quote
    for index, (insert, columns) in enumerate(shape):
        table = insert.table
        casts = []
        for name in columns:
            number += 1
            # table.c[name] also refuses a name that is not one of the table's columns.
            cast = _PG_CASTS.get(table.c[name].type.python_type)
            casts.append(f"${number}::{cast}" if cast else f"${number}")
        targets = ", ".join(quote(name) for name in columns)
        unless = ""
        if insert.unless:
            unless = f" ON CONFLICT ({', '.join(quote(name) for name in insert.unless)}) DO NOTHING"
        # Identifiers are the schema's own, quoted; every value is a parameter.
        parts.append(
            f", w{index} AS (INSERT INTO {quote(table.name)} ({targets})"  # noqa: S608
            f" SELECT {', '.join(casts)} WHERE EXISTS (SELECT 1 FROM claim){unless}"
            " RETURNING 1)"
        )
        if insert.reports_conflict:
            checks.append(
                f", CASE WHEN EXISTS (SELECT 1 FROM claim)"  # noqa: S608 - names made here
                f" THEN 1 / (SELECT count(*) FROM w{index}) END AS w{index}"
            )
    parts.append(" SELECT EXISTS (SELECT 1 FROM claim) AS claimed")
    parts.extend(checks)
    return "".join(parts)


def _pg_unit_values(
    key: RecordKey, stored: Mapping[str, Any], inserts: list[QueuedInsert]
) -> list[Any]:
    values: list[Any] = [
        f"{key.organization_id}\x1f{key.key}",
        key.organization_id,
        key.key,
        stored["p_fingerprint"],
        stored["now"],
        stored["p_expires_at"],
        stored["p_response_status"],
        stored["p_response_content_type"],
        stored["p_response_location"],
        stored["p_response_body"],
    ]
    for _, row, _ in inserts:
        values.extend(row.values())
    return values


class _Executing:
    """``SqlIdempotencyStore._executing`` as a class: entered and left once per create.

    The key joins the store's running set and the attempt becomes the ambient
    transaction; leaving ends the attempt (what was not committed is rolled back)
    and takes the key out of the set again, unless a checkpoint already did.
    """

    __slots__ = ("_attempt", "_store", "_token")

    def __init__(self, store: SqlIdempotencyStore, attempt: _SqlAttempt) -> None:
        self._store = store
        self._attempt = attempt

    async def __aenter__(self) -> Execute:
        attempt = self._attempt
        self._store._running.add(attempt.key)
        self._token = self._store._db.join(attempt)
        return Execute(attempt)

    async def __aexit__(self, *_exc: object) -> None:
        attempt = self._attempt
        self._store._db.leave(self._token)
        await attempt.close()
        # After a checkpoint the key already left the set, and another request of
        # this process may have claimed it since: that entry is not ours to remove.
        if not attempt.checkpointed:
            self._store._running.discard(attempt.key)


def _verdict_on(
    existing: IdempotencyRecord | None, attempt: _SqlAttempt
) -> Replay | Mismatch | InFlight:
    """What a deferred request whose record could not be written answers instead."""
    if existing is None or _is_free(existing, attempt.now):
        # Not committed yet (another process is claiming it) or gone again: a retry
        # in a moment replays or executes.
        return InFlight(retry_after=1)
    verdict = judge(existing, attempt.fingerprint, attempt.now)
    return InFlight(retry_after=1) if isinstance(verdict, TakeOver) else verdict


def _record_and_insert(
    claim_sql: str, claim_values: list[Any], inserts: list[QueuedInsert], raw: sqlite3.Connection
) -> None:
    """The deferred request's unit on SQLite's writer: its record, then its inserts."""
    if not raw.execute(claim_sql, claim_values).fetchall():
        raise _KeyTaken
    _insert_all(inserts, raw)


class _SqlAttempt:
    """One key, claimed or still to be claimed, and the request's transaction.

    It is the request transaction the database makes ambient: held first by the
    open transaction and, after a checkpoint, by the lease and the token. A
    deferred attempt has no transaction until the handler needs one, or until
    :meth:`complete` writes everything as one unit.
    """

    def __init__(
        self,
        store: SqlIdempotencyStore,
        key: RecordKey,
        fingerprint: str,
        params: dict[str, Any],
        *,
        created_at: float,
        ttl: float,
        resumption: Resumption | None = None,
        open_transaction: tuple[AbstractAsyncContextManager[AsyncConnection], AsyncConnection]
        | None = None,
        defer_writes: bool = True,
        key_lock: _KeyLock | None = None,
    ) -> None:
        self._store = store
        self.key = key
        self.fingerprint = fingerprint
        self.now: float = params["now"]
        self._ttl = ttl
        self._params = params
        self._created_at = created_at
        # Computed on first use: most requests never ask, and it costs a hash.
        self._resumption = resumption
        self._released_at: float | None = None
        self._scope: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._conn: AsyncConnection | None = None
        if open_transaction is not None:
            self._scope, self._conn = open_transaction
        self._claimed = open_transaction is not None
        """Whether the key is claimed in the open transaction or (after a checkpoint) committed."""
        self._queued: list[QueuedInsert] = []
        self._may_defer = open_transaction is None and defer_writes
        """Whether inserts may still wait for the commit (not once the request runs again)."""
        self._run_again = False
        """A waiting insert failed when the handler's transaction opened: its answer is void."""
        self.checkpointed = False
        """Whether a checkpoint committed: from then on every write is fenced by the token."""
        self.key_lock = key_lock
        """SQLite: the key's lock, held from the claim (or before) to the end or a checkpoint."""

    @property
    def resumption(self) -> Resumption:
        if self._resumption is None:
            self._resumption = Resumption.fresh(self.key, self._created_at)
        return self._resumption

    async def connection(self) -> AsyncConnection:
        """The open transaction; a deferred key is claimed here, and its waiting inserts run."""
        conn = self._conn
        if conn is not None:
            return conn
        if not self._claimed and self.key_lock is not None and not self.key_lock.hold():
            # Another process is running this key (on SQLite: its lock is taken).
            raise Superseded(await self._store._verdict_of_committed(self))
        conn = await self._begin()
        if self._claimed:
            return conn  # the record is committed with a lease: a new phase begins
        try:
            claim = await self._store._claim(
                conn, self.key, self.fingerprint, self.now, self._ttl, take_over=False
            )
            if not isinstance(claim, _Claim):
                raise Superseded(claim)
            self._claimed = True
            self._may_defer = False
            self._params = claim.params
            await self._store._savepoint_sql.rows(conn, {})
            queued, self._queued = self._queued, []
            for insert, row, _ in queued:
                if not await insert.prepared_for(row).rows(conn, row) and insert.reports_conflict:
                    raise RunAgain()
        except (RunAgain, IntegrityError):
            await self._abort(run_again=True)
            raise RunAgain() from None
        except BaseException:
            await self._abort()
            raise
        return conn

    async def insert(
        self,
        statement: PreparedInsert,
        row: Mapping[str, Any],
        conflict: Callable[[], BaseException] | None,
    ) -> None:
        if self._may_defer:
            self._queued.append((statement, row, conflict))
            return
        conn = await self.connection()
        inserted = await statement.prepared_for(row).rows(conn, row)
        if not inserted and statement.reports_conflict and conflict is not None:
            raise conflict()

    async def checkpoint(self, point: str, data: str | None, *, now: float) -> None:
        lease = self._store.lease_seconds
        try:
            conn = await self.connection()
            params = {
                **self._params,
                "p_point": point,
                "p_data": data,
                "p_locked_until": now + lease,
            }
            await self._write_fenced(conn, self._store._checkpoint_sql, params)
            # The phase is durable; end the transaction (on SQLite give back the writer)
            # so the external call that follows holds neither.
            await self._end()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        if not self.checkpointed:
            self.checkpointed = True
            self._store._running.discard(self.key)
            if self.key_lock is not None:
                self.key_lock.release()  # the lease holds the key from now on
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
        if self._run_again:
            # The handler swallowed the RunAgain its transaction raised: what it answered
            # after that is not the answer to record.
            self._run_again = False
            raise RunAgain()
        failed = response.status >= 400
        if not self._claimed:
            # Deferred all along: the record and (for a success) the inserts, as one unit.
            queued, self._queued = self._queued, []
            try:
                await self._store._commit_deferred(self, stored, [] if failed else queued)
            except RunAgain:
                self._may_defer = False
                raise
            return
        try:
            conn = self._conn
            if conn is not None and conn.invalidated and not self.checkpointed:
                # A cancelled statement (the deadline) took the connection, and the
                # uncommitted claim with it: record the answer as a new claim.
                await self._end()
                self._claimed = False
                await self._store._commit_record_again(self, stored)
                return
            if conn is not None and conn.invalidated:
                await self._end()  # the record is committed with our lease: a new phase
                conn = None
            if failed and conn is not None:
                if self.checkpointed:
                    # The record is committed with its lease: drop this phase's writes.
                    await self._end()
                    conn = None
                else:
                    await self._store._rollback_to_savepoint_sql.rows(conn, {})
            if conn is None:
                conn = await self.connection()
            await self._write_fenced(conn, self._store._complete_sql, stored)
            await self._end()
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def abandon(self) -> None:
        self._queued = []
        await self._end()
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

    async def close(self) -> None:
        """End whatever is still open: what was not committed is rolled back."""
        await self._end()
        if self.key_lock is not None:
            self.key_lock.release()

    async def _write_fenced(self, conn: AsyncConnection, statement: Prepared, params: Any) -> None:
        """Run ``statement`` (fenced by our token) and commit, or raise :class:`LeaseLost`."""
        if not await statement.rows(conn, params):
            await self._end()
            raise LeaseLost("another request took this idempotency record over")
        await conn.commit()

    async def _begin(self) -> AsyncConnection:
        # Entered by hand rather than with ``async with``: the transaction has to
        # outlive this call, until the holder commits and ends it.
        scope = self._store._db.transaction()
        conn = await scope.__aenter__()
        self._scope, self._conn = scope, conn
        return conn

    async def _abort(self, *, run_again: bool = False) -> None:
        """Give up a claim made in a transaction that is being rolled back."""
        self._claimed = False
        self._may_defer = False
        self._run_again = run_again
        self._queued = []
        await self._end()

    async def _end(self) -> None:
        scope = self._scope
        if scope is None:
            return
        self._scope = self._conn = None
        await scope.__aexit__(None, None, None)


class _KeyLock:
    """One key's lock in :class:`KeyLocks`, taken at most once and given back once."""

    __slots__ = ("_handle", "_locks", "_name")

    def __init__(self, locks: KeyLocks, key: RecordKey) -> None:
        self._locks = locks
        self._name = f"{key.organization_id}\x1f{key.key}"
        self._handle: object | None = None

    def hold(self) -> bool:
        """Whether the key's lock is ours (taken now if it was free), without waiting."""
        if self._handle is None:
            self._handle = self._locks.acquire(self._name)
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            self._locks.release(self._name, self._handle)
            self._handle = None


def _ids(key: RecordKey) -> dict[str, str]:
    return {"org": key.organization_id, "p_key": key.key}


def _claim_params(key: RecordKey, fingerprint: str, now: float, ttl: float) -> dict[str, Any]:
    return {
        **_ids(key),
        "p_fingerprint": fingerprint,
        "now": now,
        "p_expires_at": now + ttl,
        "p_token": random_hex(16),
    }


def _is_free(existing: IdempotencyRecord, now: float) -> bool:
    """Whether a new request may claim the key of ``existing`` (the statements' ``_FREE``)."""
    return existing.expires_at <= now and (
        existing.locked_until is None or existing.locked_until <= now
    )


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
    return _record_of(key, await loader.first(conn, _ids(key)))


def _record_of(key: RecordKey, values: tuple[Any, ...] | None) -> IdempotencyRecord | None:
    """The record a row of ``_LOAD`` holds (``None`` for no row)."""
    if values is None:
        return None
    row: Any = _Loaded._make(values)
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
