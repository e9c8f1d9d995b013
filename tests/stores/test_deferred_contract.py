"""The deferred claim of the SQL store, on SQLite and PostgreSQL.

A deferred attempt writes nothing while the handler runs; its inserts wait and
commit with the record as one unit. These tests pin the outcomes of that unit
(committed, key taken, insert conflicting), the promotion to a claim when the
handler needs its transaction, and that an error answer never lets go of the key.
Two :class:`Database` objects on one database stand for two server processes:
each has its own connections (and on SQLite its own writer), as a process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from retrysafe.database import Database, sqlite_driver
from retrysafe.database.engine import Prepared
from retrysafe.database.schema import organizations
from retrysafe.envelope import ApiError
from retrysafe.idempotency.decisions import (
    Execute,
    InFlight,
    Mismatch,
    Replay,
    RunAgain,
    Superseded,
)
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.sql import SqlIdempotencyStore
from retrysafe.unavailable import StoreUnavailable

KEY = RecordKey("org_a", "deferred-key")
TTL = 3600.0
NOW = 1000.0
CREATED = StoredResponse(201, b'{"data":{"id":"org_1"}}', "application/json", "/orgs/org_1")
CONFLICT = StoredResponse(409, b'{"errors":[{"code":"duplicate_resource"}]}', "application/json")


def _org(org_id: str, name: str | None = None) -> dict[str, str]:
    return {"id": org_id, "name": name or org_id, "created_at": "t"}


def _duplicate() -> ApiError:
    return ApiError(409, "duplicate_resource", "that name is taken")


async def _names(db: Database) -> list[str]:
    async with db.read_committed() as conn:
        rows = await conn.execute(sa.select(organizations.c.name).order_by(organizations.c.name))
        return [row.name for row in rows]


async def _insert_org(db: Database, org_id: str, name: str | None = None) -> None:
    insert = db.prepare_insert(organizations, unless=(organizations.c.name,))
    async with db.writes() as writes:
        await writes.insert(insert, _org(org_id, name), conflict=_duplicate)


@pytest.fixture
async def other_process(database: Database) -> AsyncIterator[Database]:
    """A second Database on the same database: another server process's connections."""
    other = Database(database.url)
    try:
        yield other
    finally:
        await other.dispose()


async def test_inserts_wait_and_commit_with_the_record(database: Database) -> None:
    """Nothing is written while the handler runs; then the row and the record, together."""
    store = SqlIdempotencyStore(database)
    async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _insert_org(database, "org_1")
        assert await _names(database) == []
        async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as meanwhile:
            assert isinstance(meanwhile, InFlight)  # never two runs in one process
        await decision.attempt.complete(CREATED)
    assert await _names(database) == ["org_1"]
    async with store.deferred_attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
        assert replay == Replay(CREATED)
    async with store.deferred_attempt(KEY, "other", now=NOW + 1, ttl=TTL) as mismatch:
        assert isinstance(mismatch, Mismatch)


async def test_an_error_answer_keeps_only_the_record(database: Database) -> None:
    store = SqlIdempotencyStore(database)
    failed = StoredResponse(422, b'{"errors":[]}', "application/json")
    async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _insert_org(database, "org_1")
        await decision.attempt.complete(failed)
    assert await _names(database) == []
    async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
        assert replay == Replay(failed)


async def test_leaving_without_completing_leaves_nothing(database: Database) -> None:
    store = SqlIdempotencyStore(database)

    async def crash() -> None:
        async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await _insert_org(database, "org_1")
            raise RuntimeError("crash before the commit")

    with pytest.raises(RuntimeError):
        await crash()
    assert await _names(database) == []
    async with store.deferred_attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as retry:
        assert isinstance(retry, Execute)


async def test_of_two_processes_running_one_key_one_commits_and_the_other_replays_it(
    database: Database, other_process: Database
) -> None:
    """Both ran (each its own process); the first to commit wins, the second gets its record."""
    both_ran = asyncio.Barrier(2)
    first_done = asyncio.Event()

    async def process(db: Database, name: str) -> object:
        store = SqlIdempotencyStore(db)
        async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await _insert_org(db, f"org_{name}", name)
            await both_ran.wait()
            if name == "second":
                await first_done.wait()
            try:
                await decision.attempt.complete(StoredResponse(201, name.encode(), "text/plain"))
            except Superseded as lost:
                return lost.decision
            finally:
                first_done.set()
            return "committed"

    # Each process in a task of its own, so each has its own request context.
    outcomes = await asyncio.gather(process(database, "first"), process(other_process, "second"))
    assert outcomes == ["committed", Replay(StoredResponse(201, b"first", "text/plain"))]
    assert await _names(database) == ["first"]


async def test_a_different_request_losing_the_race_is_a_mismatch(
    database: Database, other_process: Database
) -> None:
    first, second = SqlIdempotencyStore(database), SqlIdempotencyStore(other_process)
    async with (
        first.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as one,
        second.deferred_attempt(KEY, "other", now=NOW, ttl=TTL) as two,
    ):
        assert isinstance(one, Execute)
        assert isinstance(two, Execute)
        await one.attempt.complete(CREATED)
        with pytest.raises(Superseded) as lost:
            await two.attempt.complete(CREATED)
        assert isinstance(lost.value.decision, Mismatch)


async def test_a_conflicting_insert_runs_the_request_again_claiming_first(
    database: Database,
) -> None:
    """The unit rolls back whole; on the second run the insert is immediate and raises."""
    store = SqlIdempotencyStore(database)
    await _insert_org(database, "org_0", "taken")
    async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        attempt = decision.attempt
        await _insert_org(database, "org_1", "taken")  # waits: no error yet
        with pytest.raises(RunAgain):
            await attempt.complete(CREATED)
        # The second run: the same handler, now meeting the conflict where it writes.
        with pytest.raises(ApiError) as conflict:
            await _insert_org(database, "org_2", "taken")
        assert conflict.value.status == 409
        await attempt.complete(CONFLICT)
    assert await _names(database) == ["taken"]
    async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
        assert replay == Replay(CONFLICT)


async def test_a_conflict_outside_an_attempt_is_raised_from_the_block(database: Database) -> None:
    """Without an idempotency key the inserts are one unit of their own, committed at the end."""
    await _insert_org(database, "org_0", "taken")
    with pytest.raises(ApiError):
        await _insert_org(database, "org_1", "taken")
    await _insert_org(database, "org_2", "free")
    assert await _names(database) == ["free", "taken"]


async def test_the_transaction_claims_the_key_and_runs_the_waiting_inserts(
    database: Database,
) -> None:
    """A handler that needs its transaction gets it: claim, waiting inserts, then its own reads."""
    store = SqlIdempotencyStore(database)
    async with store.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await _insert_org(database, "org_1")
        async with database.write() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(organizations))
            assert count == 1  # the waiting insert ran in this transaction
            await conn.execute(organizations.insert().values(_org("org_2")))
        assert await _names(database) == []  # still uncommitted
        await decision.attempt.complete(CREATED)
    assert await _names(database) == ["org_1", "org_2"]


async def test_the_transaction_of_a_key_taken_meanwhile_raises_superseded(
    database: Database, other_process: Database
) -> None:
    first, second = SqlIdempotencyStore(database), SqlIdempotencyStore(other_process)
    async with first.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as one:
        assert isinstance(one, Execute)
        async with second.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as two:
            assert isinstance(two, Execute)
            await two.attempt.complete(CREATED)
        with pytest.raises(Superseded) as lost:
            async with database.write():
                pass  # pragma: no cover - the claim fails before the block runs
        assert lost.value.decision == Replay(CREATED)


async def test_a_deferred_attempt_meeting_a_live_claim_waits_its_turn(
    database: Database,
) -> None:
    """A key held by a checkpoint's lease is in flight for a deferred attempt too."""
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as held:
        assert isinstance(held, Execute)
        await held.attempt.checkpoint("started", None, now=NOW)
        async with store.deferred_attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as second:
            assert isinstance(second, InFlight)
        await held.attempt.complete(CREATED)


async def test_an_error_answer_never_lets_go_of_the_key(
    database: Database, other_process: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15.7: between discarding the handler's writes and the record, the key stays held.

    Every statement the first process runs while it completes its 409 first lets
    another process try the key: it must never execute. (Before the fix the claim
    was rolled back with the writes and the record inserted afresh: in between,
    the other process claimed the key and ran the request a second time.)
    """
    store, rival = SqlIdempotencyStore(database), SqlIdempotencyStore(other_process)
    seen: list[str] = []
    completing = False
    original_rows = Prepared.rows

    async def rows_with_a_rival(self: Prepared, conn: Any, parameters: Any) -> Any:
        if completing and self._db is database:
            seen.append(await _rival_try(rival))
        return await original_rows(self, conn, parameters)

    monkeypatch.setattr(Prepared, "rows", rows_with_a_rival)
    _short_busy_timeout(monkeypatch)
    async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        async with database.write() as conn:
            await conn.execute(organizations.insert().values(_org("org_1")))
        completing = True
        await decision.attempt.complete(CONFLICT)
        completing = False
    assert seen, "no statement ran while completing"
    assert "Execute" not in seen, seen
    assert await _names(database) == []
    async with rival.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
        assert replay == Replay(CONFLICT)


async def _rival_try(rival: SqlIdempotencyStore) -> str:
    """What another process gets for the key right now (it gives up at once if it may run)."""
    try:
        async with rival.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
            if isinstance(decision, Execute):
                await decision.attempt.abandon()
            return type(decision).__name__
    except StoreUnavailable:
        return "Unavailable"  # SQLite: the first process holds the file's write lock


def _short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: another process's writer gives up on the held write lock in 50 ms, not 10 s."""
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 50)


async def test_a_store_built_from_a_url_owns_its_database(database: Database) -> None:
    """The library's entry point: writes through ``store.database`` commit with the record."""
    store = SqlIdempotencyStore.from_url(database.url)
    try:
        async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            async with store.database.write() as conn:
                await conn.execute(organizations.insert().values(_org("org_1")))
            assert await _names(database) == []  # the attempt's own transaction
            await decision.attempt.complete(CREATED)
        assert await _names(database) == ["org_1"]
        async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
            assert replay == Replay(CREATED)
    finally:
        await store.aclose()
