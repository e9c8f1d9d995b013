"""The API-key lookup that brings the request's idempotency record in the same round trip."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.stores.conftest import SQL_BACKENDS, migrated_database, store_url

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.idempotency.decisions import Execute
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.service.admin import create_api_key
from retrysafe.service.authenticator import DatabaseAuthenticator, _key_with_record
from retrysafe.stores.sql import SqlIdempotencyStore

RECORDS = 20_000


@pytest.fixture(params=SQL_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path) as db:
        yield db


async def _record(store: SqlIdempotencyStore, key: RecordKey, body: bytes) -> None:
    now = time.time()
    async with store.attempt(key, "f" * 64, now=now, ttl=3600.0) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.complete(
            StoredResponse(status=201, body=body, content_type="application/json")
        )


async def test_brings_the_record_of_the_keys_own_organization_only(database: Database) -> None:
    store = SqlIdempotencyStore(database)
    authenticate = DatabaseAuthenticator(database, store)
    key_id, secret = await create_api_key(database, "acme")
    other_id, other_secret = await create_api_key(database, "globex")
    acme = (await authenticate(secret)).organization_id  # type: ignore[union-attr]
    await _record(store, RecordKey(acme, "order-1"), b'{"acme": true}')

    principal, prefetched = await authenticate.with_record(secret, "order-1")
    assert principal is not None
    assert principal.key_id == key_id
    assert prefetched is not None
    assert prefetched.key == RecordKey(acme, "order-1")
    assert prefetched.row is not None
    assert bytes(prefetched.row[11]) == b'{"acme": true}'

    # The same idempotency key in another organization finds nothing of acme's.
    principal, prefetched = await authenticate.with_record(other_secret, "order-1")
    assert principal is not None
    assert principal.key_id == other_id
    assert prefetched is not None
    assert prefetched.row is None

    # A wrong secret learns nothing, the record included.
    assert await authenticate.with_record(secret + "x", "order-1") == (None, None)


@pytest.mark.postgres
async def test_postgres_plan_made_on_an_empty_table_still_probes_both_key_columns(
    tmp_path: Path,
) -> None:
    """A generic plan made while the records table was empty must not scan the whole index.

    asyncpg's prepared statements switch to PostgreSQL's generic plan from their
    sixth run, and a service's connections make it on a fresh database. The
    lookup's plan is forced generic, made on the empty table, then run after
    20,000 records were written: a probe on both primary-key columns reads a few
    pages; one on ``key`` alone (the plain join's plan) reads every leaf of the
    index (98 pages here).
    """
    async with store_url("postgresql", tmp_path) as (url, _):
        db = Database(url)
        try:
            await upgrade(db)
            key_id, _secret = await create_api_key(db, "acme")
            lookup = _key_with_record(SqlIdempotencyStore.record_columns(), postgresql=True)
            sql = db.prepare(lookup).sql
        finally:
            await db.dispose()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE lookup AS {sql}")
            org = await conn.fetchval("SELECT organization_id FROM api_keys")
            # EXECUTE takes no bind parameters: the key id is spelled as a literal.
            run = (
                f"EXECUTE lookup('k17', {await conn.fetchval('SELECT quote_literal($1)', key_id)})"
            )
            assert (await conn.fetchrow(run))["key"] is None
            await conn.execute(
                "INSERT INTO idempotency_records (organization_id, key, fingerprint, status,"
                " created_at, expires_at) SELECT $1, 'k' || n, 'f', 'completed', 0, 1e12"
                " FROM generate_series(1, $2) AS n",
                org,
                RECORDS,
            )
            found = await conn.fetchrow(run)
            assert found["key"] == "k17"
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {run}")
        finally:
            await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    pages = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert pages < 20, json.dumps(plan, indent=1)  # the plain join read 98
