"""The lease and recovery-point contract every idempotency store keeps, run against each backend.

A checkpoint makes a record survive its holder: other requests meet a live lease
(InFlight), then, once it lapsed, one of them takes the record over and resumes
where the holder stopped, with the same external key; the old holder, if it was
only slow, is fenced off (LeaseLost). Times are the ``now`` the caller passes, so
nothing here sleeps; ``LATER`` is past every store's lease and well inside the TTL.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa
from tests.stores.steps import completed, decided

from retrysafe.database import Database
from retrysafe.database.schema import organizations
from retrysafe.idempotency.decisions import (
    Attempt,
    Execute,
    InFlight,
    LeaseLost,
    Mismatch,
    Replay,
    Resumption,
)
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.stores.sql import SqlIdempotencyStore

KEY = RecordKey("org_a", "lease-key")
TTL = 100_000.0
START = 1000.0
LATER = START + 5000.0
"""Past any lease a store is built with in these tests (at most minutes), before the TTL."""
ANSWER = '{"provider":"passed"}'
CREATED = StoredResponse(201, b'{"data":{"id":"ver_1"}}', "application/json", "/api/v1/v/1")
BAD_GATEWAY = StoredResponse(502, b'{"errors":[]}', "application/json")


class Crash(Exception):
    """Stands for the process dying: the attempt is left without complete or abandon."""


async def run_then_crash(
    store: IdempotencyStore, now: float, work: Callable[[Attempt], Awaitable[None]]
) -> None:
    """Claim KEY at ``now``, run ``work`` on the attempt, then 'die' inside the context."""
    async with store.attempt(KEY, "fp", now=now, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await work(decision.attempt)
        raise Crash


async def checkpoint_then_crash(store: IdempotencyStore) -> Resumption:
    """Claim KEY, commit the point ``provider_called`` with ANSWER, then 'die'."""
    seen: list[Resumption] = []

    async def work(attempt: Attempt) -> None:
        seen.append(attempt.resumption)
        await attempt.checkpoint("provider_called", ANSWER, now=START)

    with pytest.raises(Crash):
        await run_then_crash(store, START, work)
    return seen[0]


async def _nothing(_attempt: Attempt) -> None:
    return None


async def test_fresh_claim_resumes_from_nowhere(store: IdempotencyStore) -> None:
    """A new key starts with no point and no data, and its external key is not the key itself."""
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        resumption = decision.attempt.resumption
        assert (resumption.point, resumption.data) == (None, None)
        assert resumption.external_key
        assert KEY.key not in resumption.external_key
        await decision.attempt.complete(CREATED)


async def test_checkpoint_survives_a_crash_and_the_retry_resumes_after_the_lease(
    store: IdempotencyStore,
) -> None:
    """In flight while the lease lives; then taken over with point, data and external key."""
    fresh = await checkpoint_then_crash(store)
    async with store.attempt(KEY, "fp", now=START + 1, ttl=TTL) as early:
        assert isinstance(early, InFlight)
        assert early.retry_after >= 1
    async with store.attempt(KEY, "fp", now=LATER, ttl=TTL) as retry:
        assert isinstance(retry, Execute)
        assert retry.attempt.resumption == Resumption("provider_called", ANSWER, fresh.external_key)
        await retry.attempt.complete(CREATED)
    assert await decided(store, KEY, now=LATER + 1, ttl=TTL) == Replay(CREATED)


async def test_a_different_request_with_a_checkpointed_key_is_a_mismatch(
    store: IdempotencyStore,
) -> None:
    """The fingerprint is judged before the lease: no take-over by another request."""
    await checkpoint_then_crash(store)
    assert isinstance(await decided(store, KEY, now=LATER, ttl=TTL, fingerprint="other"), Mismatch)


async def test_slow_holder_is_fenced_after_a_take_over(store: IdempotencyStore) -> None:
    """A holder that outlived its lease can neither checkpoint nor complete any more."""
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as slow:
        assert isinstance(slow, Execute)
        await slow.attempt.checkpoint("started", None, now=START)
        async with store.attempt(KEY, "fp", now=LATER, ttl=TTL) as retry:
            assert isinstance(retry, Execute)
            assert retry.attempt.resumption.point == "started"
            await retry.attempt.complete(CREATED)
        with pytest.raises(LeaseLost):
            await slow.attempt.checkpoint("provider_called", ANSWER, now=LATER)
        with pytest.raises(LeaseLost):
            await slow.attempt.complete(BAD_GATEWAY)
    assert await decided(store, KEY, now=LATER + 1, ttl=TTL) == Replay(CREATED)


async def test_a_checkpoint_renews_the_lease(store: IdempotencyStore) -> None:
    """Each checkpoint pushes the lease out from its own time, not the claim's."""
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as holder:
        assert isinstance(holder, Execute)
        await holder.attempt.checkpoint("started", None, now=START)
        await holder.attempt.checkpoint("provider_called", ANSWER, now=LATER)
        assert isinstance(await decided(store, KEY, now=LATER + 1, ttl=TTL), InFlight)
        await holder.attempt.complete(CREATED)


async def test_abandon_after_a_checkpoint_lets_the_next_retry_resume_at_once(
    store: IdempotencyStore,
) -> None:
    """Abandoning keeps the recovery point and ends the lease: no wait for its expiry."""
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as first:
        assert isinstance(first, Execute)
        external_key = first.attempt.resumption.external_key
        await first.attempt.checkpoint("provider_called", ANSWER, now=START)
        await first.attempt.abandon()
    async with store.attempt(KEY, "fp", now=START + 1, ttl=TTL) as retry:
        assert isinstance(retry, Execute)
        assert retry.attempt.resumption == Resumption("provider_called", ANSWER, external_key)
        await retry.attempt.complete(CREATED)


async def test_error_answer_after_a_checkpoint_is_recorded_and_replayed(
    store: IdempotencyStore,
) -> None:
    """A 502 after the record was committed once is recorded like any other answer."""
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.checkpoint("started", None, now=START)
        await decision.attempt.complete(BAD_GATEWAY)
    assert await decided(store, KEY, now=START + 1, ttl=TTL) == Replay(BAD_GATEWAY)


async def test_error_answer_of_a_resumed_request_is_recorded(store: IdempotencyStore) -> None:
    """The request that took a record over records its error answer too (not left in progress)."""
    await checkpoint_then_crash(store)
    await completed(store, KEY, BAD_GATEWAY, now=LATER, ttl=TTL)
    assert await decided(store, KEY, now=LATER + 1, ttl=TTL) == Replay(BAD_GATEWAY)


async def test_error_answer_on_a_key_reused_after_expiry_is_recorded(
    store: IdempotencyStore,
) -> None:
    """An expired record claimed anew and answered with an error keeps that error."""
    await completed(store, KEY, CREATED, now=START, ttl=10)
    failed = StoredResponse(422, b'{"errors":[{"code":"invalid_value"}]}', "application/json")
    await completed(store, KEY, failed, now=START + 11, ttl=TTL, fingerprint="other")
    assert await decided(store, KEY, now=START + 12, ttl=TTL, fingerprint="other") == Replay(failed)


async def test_a_take_over_that_crashes_before_its_checkpoint_leaves_the_record_resumable(
    store: IdempotencyStore,
) -> None:
    """The second holder dying early changes nothing: the third resumes where the first stopped."""
    fresh = await checkpoint_then_crash(store)
    with pytest.raises(Crash):
        await run_then_crash(store, LATER, _nothing)
    async with store.attempt(KEY, "fp", now=LATER * 2, ttl=TTL) as third:
        assert isinstance(third, Execute)
        assert third.attempt.resumption == Resumption("provider_called", ANSWER, fresh.external_key)
        await third.attempt.complete(CREATED)


async def test_external_key_differs_between_organizations_and_after_expiry(
    store: IdempotencyStore,
) -> None:
    """Same key string, other organization or a later life of the key: another external key."""
    seen = set()
    for key, now in ((KEY, START), (RecordKey("org_b", KEY.key), START), (KEY, START + 20)):
        async with store.attempt(key, "fp", now=now, ttl=10) as decision:
            assert isinstance(decision, Execute)
            seen.add(decision.attempt.resumption.external_key)
            await decision.attempt.complete(CREATED)
    assert len(seen) == 3


# -- SQL only: what the checkpoint does to the handler's transaction ---------------------------


async def _org_ids(db: Database) -> set[str]:
    async with db.read() as conn:
        return set((await conn.scalars(sa.select(organizations.c.id))).all())


async def _write_org(db: Database, org_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(organizations.insert().values(id=org_id, name=org_id, created_at="t"))


async def test_sql_checkpoint_commits_the_phase_and_an_error_discards_only_the_next(
    database: Database,
) -> None:
    """Writes before the checkpoint stay; writes after it go with a 502; the 502 is kept."""
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _write_org(database, "org_before")
        await decision.attempt.checkpoint("started", None, now=START)
        await _write_org(database, "org_after")
        await decision.attempt.complete(BAD_GATEWAY)
    assert await _org_ids(database) == {"org_before"}
    assert await decided(store, KEY, now=START + 1, ttl=TTL) == Replay(BAD_GATEWAY)


async def test_sql_crash_after_a_checkpoint_keeps_the_phase_and_drops_the_rest(
    database: Database,
) -> None:
    store = SqlIdempotencyStore(database)

    async def work(attempt: Attempt) -> None:
        await _write_org(database, "org_before")
        await attempt.checkpoint("started", None, now=START)
        await _write_org(database, "org_after")

    with pytest.raises(Crash):
        await run_then_crash(store, START, work)
    assert await _org_ids(database) == {"org_before"}


async def test_sql_after_a_checkpoint_the_holder_blocks_no_other_writer(
    database: Database,
) -> None:
    """Between checkpoint and the next write the holder has no transaction and no write lock.

    Another writer (in a context of its own, as another request would be) commits
    while the holder is still inside its attempt; before the checkpoint it could
    not, on SQLite, until the holder finished.
    """
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=START, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.checkpoint("started", None, now=START)
        other = asyncio.get_running_loop().create_task(
            _write_org(database, "org_other"), context=contextvars.Context()
        )
        await asyncio.wait_for(other, timeout=10)
        await _write_org(database, "org_mine")
        await decision.attempt.complete(CREATED)
    assert await _org_ids(database) == {"org_other", "org_mine"}


async def test_sql_a_second_store_meets_the_lease_not_a_lock(database: Database) -> None:
    """Another process's store answers InFlight at once after the checkpoint, then takes over."""
    first = SqlIdempotencyStore(database, lease_seconds=30)
    other_db = Database(database.url)
    second = SqlIdempotencyStore(other_db, lease_seconds=30)
    try:
        async with first.attempt(KEY, "fp", now=START, ttl=TTL) as holder:
            assert isinstance(holder, Execute)
            await holder.attempt.checkpoint("started", None, now=START)
            async with second.attempt(KEY, "fp", now=START + 29, ttl=TTL) as early:
                assert isinstance(early, InFlight)
            async with second.attempt(KEY, "fp", now=START + 31, ttl=TTL) as retry:
                assert isinstance(retry, Execute)
                await retry.attempt.complete(CREATED)
            with pytest.raises(LeaseLost):
                await holder.attempt.complete(BAD_GATEWAY)
    finally:
        await other_db.dispose()
    async with first.attempt(KEY, "fp", now=START + 40, ttl=TTL) as replay:
        assert replay == Replay(CREATED)
