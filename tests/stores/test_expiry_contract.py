"""Expiry never beats a live lease, in every store: a TTL shorter than the work is not a new key.

A record expires when its TTL has passed *and* no lease holds it. Before this
rule the claim overwrote a record whose TTL had ended while its holder was still
calling the provider, and the retry ran the request a second time. Each
checkpoint also moves the record's expiry to at least the end of its lease, so
the answer recorded after a long external call is replayed, not immediately
expired. Times are the ``now`` the caller passes (a fake clock): nothing sleeps.
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa
from redis.asyncio import Redis
from tests.stores.steps import decided
from tests.support import redis_service

from retrysafe.database.schema import idempotency_records
from retrysafe.idempotency.decisions import Execute, InFlight, Mismatch, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.redis import RedisIdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore

KEY = RecordKey("org_a", "short-ttl")
SHORT_TTL = 2.0
"""Shorter than any lease the stores are built with here (30 s, 60 s)."""
START = 1000.0
PAST_EVERY_LEASE = START + 5000.0
CREATED = StoredResponse(201, b'{"data":{"id":"ver_1"}}', "application/json", "/api/v1/v/1")


async def test_a_checkpointed_record_is_not_claimed_after_its_ttl_while_its_lease_lives(
    store: IdempotencyStore,
) -> None:
    """Past the TTL but inside the lease: the retry gets 409 (or 422 if it differs), never runs."""
    async with store.attempt(KEY, "fp", now=START, ttl=SHORT_TTL) as holder:
        assert isinstance(holder, Execute)
        await holder.attempt.checkpoint("started", None, now=START)
        assert isinstance(await decided(store, KEY, now=START + 3, ttl=SHORT_TTL), InFlight)
        assert isinstance(
            await decided(store, KEY, now=START + 3, ttl=SHORT_TTL, fingerprint="other"), Mismatch
        )
        assert await store.purge_expired(START + 3) == 0
        await holder.attempt.complete(CREATED)


async def test_the_answer_after_a_long_call_is_replayed_until_the_lease_would_have_ended(
    store: IdempotencyStore,
) -> None:
    """A checkpoint moves expiry to the lease's end: completing late does not expire at once."""
    async with store.attempt(KEY, "fp", now=START, ttl=SHORT_TTL) as holder:
        assert isinstance(holder, Execute)
        await holder.attempt.checkpoint("started", None, now=START)
        await holder.attempt.complete(CREATED)
    assert await decided(store, KEY, now=START + 5, ttl=SHORT_TTL) == Replay(CREATED)
    assert await store.purge_expired(START + 5) == 0
    # Once the lease would have ended too, the key is new again.
    async with store.attempt(KEY, "fp", now=PAST_EVERY_LEASE, ttl=SHORT_TTL) as again:
        assert isinstance(again, Execute)
        assert again.attempt.resumption.point is None
        await again.attempt.complete(CREATED)


async def test_a_running_claim_is_not_taken_by_a_retry_after_the_ttl(
    store: IdempotencyStore,
) -> None:
    """Before any checkpoint the claim itself (lease or transaction) holds the key past the TTL."""
    async with store.attempt(KEY, "fp", now=START, ttl=SHORT_TTL) as holder:
        assert isinstance(holder, Execute)
        assert isinstance(await decided(store, KEY, now=START + 3, ttl=SHORT_TTL), InFlight)
        await holder.attempt.complete(CREATED)


async def _backdate_expiry(store: IdempotencyStore, key: RecordKey, expires_at: float) -> None:
    """Set a record's expiry behind the stores' back, as a row written before this rule was."""
    if isinstance(store, MemoryIdempotencyStore):
        records = store._records
        records[key] = replace(records[key], expires_at=expires_at)
    elif isinstance(store, SqlIdempotencyStore):
        table = idempotency_records
        # Not write(): inside the holder's attempt that would join (and keep) its transaction.
        async with store._db.transaction() as conn:
            await conn.execute(
                sa.update(table)
                .where(table.c.organization_id == key.organization_id, table.c.key == key.key)
                .values(expires_at=expires_at)
            )
            await conn.commit()
    elif isinstance(store, RedisIdempotencyStore):
        client = Redis.from_url(redis_service.URL)
        try:
            assert await client.hset(store.redis_key(key), "expires_at", repr(expires_at)) == 0
        finally:
            await client.aclose()
    else:  # pragma: no cover - a new store must say how to reach its records here
        raise TypeError(f"no way to backdate a record in {type(store).__name__}")


async def test_a_record_whose_expiry_passed_under_a_live_lease_is_not_claimed(
    store: IdempotencyStore,
) -> None:
    """The claim itself checks the lease, as purge does, whatever expiry a record carries."""
    async with store.attempt(KEY, "fp", now=START, ttl=SHORT_TTL) as holder:
        assert isinstance(holder, Execute)
        await holder.attempt.checkpoint("started", None, now=START)
        await _backdate_expiry(store, KEY, START + 1)
        assert isinstance(await decided(store, KEY, now=START + 3, ttl=SHORT_TTL), InFlight)
        assert await store.purge_expired(START + 3) == 0
        await holder.attempt.complete(CREATED)
