"""A completed key replays while other requests with it are being judged, never 409.

The SQL store answers 409 at once for a key another request is busy with (this
process's own set, or PostgreSQL's advisory lock held by another process). When
the record is already completed, that busy request is itself only a replay, and
the answer must be the recorded response: the benchmark's replay row measured 94 %
409s from concurrent replays of one key before this was fixed.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.stores.steps import completed, decided

from retrysafe.database import Database
from retrysafe.idempotency.decisions import Execute, InFlight, Mismatch, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.sql import SqlIdempotencyStore

NOW = 1_800_000_000.0
TTL = 3600.0
KEY = RecordKey("org_replays", "one-key")
CREATED = StoredResponse(201, b'{"data":{}}', "application/json", "/api/v1/accounts/act_1")


async def _completed(store: SqlIdempotencyStore) -> None:
    await completed(store, KEY, CREATED, now=NOW, ttl=TTL)


async def test_a_replay_while_this_process_judges_the_same_key_replays(database: Database) -> None:
    """The second of two overlapping replays gets the record, not 409 in flight."""
    store = SqlIdempotencyStore(database)
    await _completed(store)
    async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as first:
        assert isinstance(first, Replay)
        assert await decided(store, KEY, now=NOW + 1, ttl=TTL) == Replay(CREATED)
        assert isinstance(
            await decided(store, KEY, now=NOW + 1, ttl=TTL, fingerprint="other"), Mismatch
        )


async def test_a_key_still_running_in_this_process_is_in_flight(database: Database) -> None:
    """The read that finds replays must not find the first request's uncommitted claim."""
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as first:
        assert isinstance(first, Execute)
        assert isinstance(await decided(store, KEY, now=NOW, ttl=TTL), InFlight)
        await first.attempt.complete(CREATED)


async def test_an_expired_record_is_not_replayed_from_the_busy_path(database: Database) -> None:
    store = SqlIdempotencyStore(database)
    await _completed(store)
    later = NOW + TTL + 1
    async with store.attempt(KEY, "fp", now=later, ttl=TTL) as first:
        assert isinstance(first, Execute)
        assert isinstance(await decided(store, KEY, now=later, ttl=TTL), InFlight)
        await first.attempt.abandon()


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_replay_while_another_process_holds_the_key_replays(database: Database) -> None:
    """Another process holding the key's advisory lock (say, replaying it) does not turn it 409."""
    store = SqlIdempotencyStore(database)
    await _completed(store)
    url = make_url(database.url).set(drivername="postgresql")
    other = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        async with other.transaction():
            lock = f"{KEY.organization_id}\x1f{KEY.key}"
            await other.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
            assert await decided(store, KEY, now=NOW + 1, ttl=TTL) == Replay(CREATED)
    finally:
        await other.close()
