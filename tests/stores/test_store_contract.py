"""The contract every idempotency store keeps, run against each backend."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from tests.stores.steps import completed, decided

from retrysafe.database import Database
from retrysafe.database.schema import organizations
from retrysafe.idempotency.decisions import Execute, InFlight, LeaseLost, Mismatch, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore

KEY = RecordKey("org_a", "key-1")
CREATED = StoredResponse(201, b'{"data":{"id":"act_1"}}', "application/json", "/api/v1/accounts/1")
TTL = 3600.0


async def test_first_request_executes_and_its_response_is_replayed(store: IdempotencyStore) -> None:
    """A new key executes; once completed, the same request gets the stored response."""
    await completed(store, KEY, CREATED, now=1000, ttl=TTL)
    assert await decided(store, KEY, now=1001, ttl=TTL) == Replay(CREATED)


async def test_different_fingerprint_is_a_mismatch(store: IdempotencyStore) -> None:
    await completed(store, KEY, CREATED, now=1000, ttl=TTL)
    assert isinstance(await decided(store, KEY, now=1001, ttl=TTL, fingerprint="other"), Mismatch)


async def test_error_responses_are_recorded_too(store: IdempotencyStore) -> None:
    """4xx and 5xx answers produced by a handler replay like a 201."""
    failed = StoredResponse(422, b'{"errors":[]}', "application/json")
    await completed(store, KEY, failed, now=1000, ttl=TTL)
    assert await decided(store, KEY, now=1001, ttl=TTL) == Replay(failed)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"12:34:56:",  # digits and colons, as the Redis store frames its replies
        bytes(range(256)) * 3,  # NUL, every byte, not UTF-8
        b'{"a":"' + b"x" * 70_000 + b'"}',
    ],
    ids=["empty", "colons", "every-byte", "70k"],
)
async def test_any_body_replays_byte_for_byte(store: IdempotencyStore, body: bytes) -> None:
    answer = StoredResponse(201, body, "application/octet-stream", "/x:1")
    await completed(store, KEY, answer, now=1000, ttl=TTL)
    assert await decided(store, KEY, now=1001, ttl=TTL) == Replay(answer)


async def test_abandoned_claim_leaves_nothing(store: IdempotencyStore) -> None:
    """An abandoned attempt (a 503, a crash) frees the key: the retry executes."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.abandon()
    assert isinstance(await decided(store, KEY, now=1001, ttl=TTL), Execute)


async def test_leaving_without_completing_abandons(store: IdempotencyStore) -> None:
    """An exception inside the attempt (a crash of the handler) records nothing."""
    try:
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            raise RuntimeError("handler crashed")
    except RuntimeError:
        pass
    assert isinstance(await decided(store, KEY, now=1001, ttl=TTL), Execute)


async def test_concurrent_attempt_with_the_same_key_is_in_flight(store: IdempotencyStore) -> None:
    """While a key executes, another attempt with it gets InFlight, never Execute."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as second:
            assert isinstance(second, InFlight)
            assert second.retry_after >= 1
        await first.attempt.complete(CREATED)


async def test_keys_are_scoped_to_the_organization(store: IdempotencyStore) -> None:
    await completed(store, KEY, CREATED, now=1000, ttl=TTL)
    other_org = RecordKey("org_b", KEY.key)
    assert isinstance(await decided(store, other_org, now=1001, ttl=TTL), Execute)


async def test_expired_record_makes_the_key_new_again(store: IdempotencyStore) -> None:
    await completed(store, KEY, CREATED, now=1000, ttl=10)
    assert isinstance(await decided(store, KEY, now=1011, ttl=10, fingerprint="other"), Execute)


async def test_purge_removes_only_expired_records(store: IdempotencyStore) -> None:
    for index, ttl in enumerate((10, 10, 1000)):
        key = RecordKey("org_a", f"k{index}")
        await completed(store, key, CREATED, now=1000, ttl=ttl)
    assert await store.purge_expired(now=1500) == 2
    async with store.attempt(RecordKey("org_a", "k2"), "fp", now=1500, ttl=1000) as decision:
        assert decision == Replay(CREATED)


async def test_many_concurrent_attempts_execute_once(store: IdempotencyStore) -> None:
    """20 racing attempts with one key: exactly one executes, the rest wait or replay."""
    executed = 0

    async def one() -> str:
        nonlocal executed
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            if isinstance(decision, Execute):
                executed += 1
                await asyncio.sleep(0.05)
                await decision.attempt.complete(CREATED)
            return type(decision).__name__

    outcomes = await asyncio.gather(*(one() for _ in range(20)))
    assert executed == 1
    assert outcomes.count("Execute") == 1
    assert set(outcomes) <= {"Execute", "InFlight", "Replay"}


async def test_memory_lease_expiry_lets_a_retry_take_over_and_fences_the_old_holder() -> None:
    """A holder whose lease ran out cannot overwrite the record of the one that took over."""
    store = MemoryIdempotencyStore(lease_seconds=5)
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as stale:
        assert isinstance(stale, Execute)
        assert isinstance(await decided(store, KEY, now=1003, ttl=TTL), InFlight)
        await completed(store, KEY, CREATED, now=1006, ttl=TTL)
        with pytest.raises(LeaseLost):
            await stale.attempt.complete(StoredResponse(500, b"late", "application/json"))
    assert await decided(store, KEY, now=1007, ttl=TTL) == Replay(CREATED)


async def _org_count(db: Database) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(organizations)) or 0)


async def _write_org(db: Database, org_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(organizations.insert().values(id=org_id, name=org_id, created_at="t"))


async def test_sql_handler_writes_commit_with_the_record(database: Database) -> None:
    """Writes made inside the attempt join its transaction and commit with the record."""
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _write_org(database, "org_1")
        await decision.attempt.complete(CREATED)
    assert await _org_count(database) == 1


async def test_sql_crash_before_commit_leaves_nothing(database: Database) -> None:
    """Neither the handler's writes nor the claim survive an attempt that never completed."""
    store = SqlIdempotencyStore(database)
    try:
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await _write_org(database, "org_1")
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert await _org_count(database) == 0
    assert isinstance(await decided(store, KEY, now=1001, ttl=TTL), Execute)


async def test_sql_error_response_discards_handler_writes_but_is_recorded(
    database: Database,
) -> None:
    """A 4xx/5xx answer is replayed later, and nothing the handler wrote before it stays."""
    store = SqlIdempotencyStore(database)
    failed = StoredResponse(409, b'{"errors":[]}', "application/json")
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _write_org(database, "org_1")
        await decision.attempt.complete(failed)
    assert await _org_count(database) == 0
    assert await decided(store, KEY, now=1001, ttl=TTL) == Replay(failed)


async def test_sql_two_stores_on_one_database_never_both_execute(database: Database) -> None:
    """Two processes' stores (here: two store objects) racing on one key execute it once."""
    other = Database(database.url)
    stores = [SqlIdempotencyStore(database), SqlIdempotencyStore(other)]
    executed = 0

    async def one(store: SqlIdempotencyStore) -> None:
        nonlocal executed
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            if isinstance(decision, Execute):
                executed += 1
                await _write_org(database if store is stores[0] else other, f"o{executed}")
                await asyncio.sleep(0.05)
                await decision.attempt.complete(CREATED)

    try:
        await asyncio.gather(*(one(stores[i % 2]) for i in range(10)))
    finally:
        await other.dispose()
    assert executed == 1
    assert await _org_count(database) == 1
