"""API keys looked up in the service's database: the authenticator the pipeline calls."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, literal_column, select, true

from retrysafe.database import Database
from retrysafe.database.schema import api_keys, idempotency_records
from retrysafe.idempotency.records import RecordKey
from retrysafe.idempotency.store import Prefetched
from retrysafe.pipeline.principal import Principal
from retrysafe.service.admin import SCOPE_SEPARATOR
from retrysafe.service.api_keys import secret_matches, split_presented
from retrysafe.stores.sql import SqlIdempotencyStore

_KEY_COLUMNS = (api_keys.c.organization_id, api_keys.c.secret_hash, api_keys.c.scopes)
# By primary key, so one index probe; a revoked key simply is not found.
_ACTIVE = and_(api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None))
_ACTIVE_KEY = select(*_KEY_COLUMNS).where(_ACTIVE)


def _key_with_record(record_columns: tuple[Any, ...], *, postgresql: bool) -> Any:
    """The key and, in the same round trip, the committed record of the request's
    idempotency key in the key's own organization (never another's).

    On PostgreSQL the record is looked up in a ``LATERAL`` subquery that ``OFFSET 0``
    keeps from being flattened into a plain join. As a join, the statement's generic
    plan (which asyncpg's prepared statement gets from its sixth run on) could be
    made while the records table was still empty; with no statistics, probing the
    primary key ``(organization_id, key)`` on ``key`` alone, the organization left to
    a filter, looked as cheap as probing both, and that plan scans the whole index
    on every request: seen at 0.57 ms per lookup after 20,000 records, growing with
    every record, until the next ANALYZE replaced the plan. A lateral subquery is
    planned on its own, with the key's organization as a parameter, so both columns
    are always the probe.
    """
    record = and_(
        idempotency_records.c.organization_id == api_keys.c.organization_id,
        idempotency_records.c.key == bindparam("p_key"),
    )
    if not postgresql:  # SQLite has no LATERAL, and its planner probes both columns anyway
        return (
            select(*_KEY_COLUMNS, *record_columns)
            .select_from(api_keys.outerjoin(idempotency_records, record))
            .where(_ACTIVE)
        )
    found = select(*record_columns).where(record).offset(literal_column("0")).lateral("record")
    return (
        select(*_KEY_COLUMNS, *found.c)
        .select_from(api_keys.outerjoin(found, true()))
        .where(_ACTIVE)
    )


@lru_cache(maxsize=256)
def _scopes(stored: str) -> frozenset[str]:
    # Few distinct scope sets exist; parsing each once keeps the hot path lean. This
    # caches the parse of a string only, never a key: revocation is still seen at once.
    return frozenset(s for s in stored.split(SCOPE_SEPARATOR) if s)


class DatabaseAuthenticator:
    """Resolves a presented ``rsk_<key id>.<secret>`` to the key's :class:`Principal`.

    Nothing is cached between requests, so a revocation takes effect immediately
    in every process sharing the database. Given the ``records`` store that lives
    in the same database, a keyed request's lookup also brings its idempotency
    record (:meth:`with_record`): one round trip less per create and per replay.
    """

    def __init__(self, db: Database, records: SqlIdempotencyStore | None = None) -> None:
        self._db = db
        self._active_key = db.prepare(_ACTIVE_KEY)
        self._records = records if records is not None and records.database is db else None
        self._key_with_record = (
            db.prepare(
                _key_with_record(SqlIdempotencyStore.record_columns(), postgresql=not db.is_sqlite)
            )
            if self._records is not None
            else None
        )

    async def __call__(self, presented: str) -> Principal | None:
        parts = split_presented(presented)
        if parts is None:
            return None
        key_id, secret = parts
        # Inline on SQLite, one statement straight on asyncpg on PostgreSQL: every
        # request pays this lookup, and no cache may hide a revocation.
        row = await self._db.first_committed(self._active_key, {"key_id": key_id})
        return None if row is None else _principal(key_id, secret, row)

    async def with_record(
        self, presented: str, idempotency_key: str
    ) -> tuple[Principal | None, Prefetched | None]:
        """:meth:`__call__`, and the committed record of ``idempotency_key`` (given a store)."""
        if self._key_with_record is None or self._records is None:
            return await self(presented), None
        parts = split_presented(presented)
        if parts is None:
            return None, None
        key_id, secret = parts
        row = await self._db.first_committed(
            self._key_with_record, {"key_id": key_id, "p_key": idempotency_key}
        )
        if row is None:
            return None, None
        principal = _principal(key_id, secret, row)
        if principal is None:
            return None, None  # a wrong secret learns nothing, the record included
        record = row[3:]
        prefetched = Prefetched(
            self._records,
            RecordKey(principal.organization_id, idempotency_key),
            None if record[0] is None else tuple(record),
        )
        return principal, prefetched


def _principal(key_id: str, secret: str, row: tuple[Any, ...]) -> Principal | None:
    organization_id, secret_hash, scopes = row[:3]
    # Constant-time comparison of hashes: timing reveals nothing about the secret.
    if not secret_matches(secret, secret_hash):
        return None
    return Principal(organization_id, key_id, _scopes(scopes))
