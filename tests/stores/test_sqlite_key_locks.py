"""SQLite: a claim-first request holds its key's lock, not the file's write lock, while it runs.

Two :class:`Database` objects on one file stand for two server processes (each its
own writer and its own key-lock file descriptor); the last test kills a real one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.database.round_trips import sqlite_statements

from retrysafe.database import Database
from retrysafe.database.key_locks import open_key_locks
from retrysafe.idempotency.decisions import Execute, InFlight, Replay, Superseded
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.sql import SqlIdempotencyStore

from .conftest import migrated_database

pytestmark = pytest.mark.skipif(
    open_key_locks("/x.db") is None, reason="no open-file-description locks on this platform"
)

KEY = RecordKey("org_a", "held-key")
TTL = 3600.0
NOW = 1000.0
CREATED = StoredResponse(201, b'{"data":{"id":"acc_1"}}', "application/json", "/a/acc_1")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database("sqlite", tmp_path) as db:
        yield db


@pytest.fixture
async def other_process(database: Database) -> AsyncIterator[Database]:
    other = Database(database.url)
    try:
        yield other
    finally:
        await other.dispose()


def _file(database: Database) -> str:
    assert database.sqlite_path is not None
    return database.sqlite_path


async def test_a_running_request_leaves_the_file_writable(
    database: Database, other_process: Database
) -> None:
    """While the handler runs, other writers write; the same key elsewhere is a 409."""
    first, second = SqlIdempotencyStore(database), SqlIdempotencyStore(other_process)
    async with first.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        # With the claim in an open transaction this failed: 'database is locked'.
        writer = sqlite3.connect(_file(database), timeout=0, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("COMMIT")
        finally:
            writer.close()
        async with second.attempt(KEY, "fp", now=NOW, ttl=TTL) as duplicate:
            assert isinstance(duplicate, InFlight)
        await decision.attempt.complete(CREATED)
    async with second.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as retry:
        assert retry == Replay(CREATED)


async def test_a_deferred_commit_never_takes_a_key_running_elsewhere(
    database: Database, other_process: Database
) -> None:
    """The claim-first request keeps the key: the deferred one is answered 409, not recorded."""
    first, second = SqlIdempotencyStore(database), SqlIdempotencyStore(other_process)
    async with first.attempt(KEY, "fp", now=NOW, ttl=TTL) as running:
        assert isinstance(running, Execute)
        async with second.deferred_attempt(KEY, "fp", now=NOW, ttl=TTL) as deferred:
            assert isinstance(deferred, Execute)
            with pytest.raises(Superseded) as lost:
                await deferred.attempt.complete(StoredResponse(201, b"second", "text/plain"))
            assert isinstance(lost.value.decision, InFlight)
        await running.attempt.complete(CREATED)
    async with first.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as retry:
        assert retry == Replay(CREATED)


async def test_the_first_write_claims_the_key_in_its_transaction(database: Database) -> None:
    """A handler's write runs where it is made (never queued), and commits with the record."""
    store = SqlIdempotencyStore(database)
    async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        async with database.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO organizations (id, name, created_at) VALUES ('org_w', 'w', 1.0)"
            )
            inside = await conn.exec_driver_sql("SELECT count(*) FROM organizations")
            assert inside.scalar() == 1
        with sqlite3.connect(_file(database)) as reader:
            assert reader.execute("SELECT count(*) FROM organizations").fetchone()[0] == 0
            assert reader.execute("SELECT count(*) FROM idempotency_records").fetchone()[0] == 0
        await decision.attempt.complete(CREATED)
    with sqlite3.connect(_file(database)) as reader:
        assert reader.execute("SELECT count(*) FROM organizations").fetchone()[0] == 1
        assert reader.execute("SELECT status FROM idempotency_records").fetchall() == [
            ("completed",)
        ]


async def test_the_record_is_read_once_under_the_key_lock_and_a_replay_lets_go_of_it(
    database: Database,
) -> None:
    """A new key and a replay each read the record once; a replay does not hold the key.

    Each inline read hands the GIL to whichever thread waits for it, so a read
    before the lock that the lock makes necessary again is pure cost.
    """
    with sqlite_statements() as sent:
        traced = Database(database.url)  # its connections open inside: traced
        store = SqlIdempotencyStore(traced)
        try:
            async with store.attempt(KEY, "fp", now=NOW, ttl=TTL) as decision:
                assert isinstance(decision, Execute)
                await decision.attempt.complete(CREATED)
            created = list(sent)
            sent.clear()
            async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as replay:
                assert replay == Replay(CREATED)
                locks = open_key_locks(_file(database))
                assert locks is not None
                handle = locks.acquire(f"{KEY.organization_id}\x1f{KEY.key}")
                assert handle is not None, "the replay still holds its key's lock"
                locks.release(f"{KEY.organization_id}\x1f{KEY.key}", handle)
                locks.close()
            replayed = list(sent)
        finally:
            await traced.dispose()

    def reads(statements: list[str]) -> list[str]:
        return [s for s in statements if s.startswith("SELECT") and "idempotency_records" in s]

    assert len(reads(created)) == 1, created
    assert len(reads(replayed)) == 1, replayed
    assert replayed == reads(replayed), replayed  # nothing else: no writer, no transaction


def _holder(url: str) -> subprocess.Popen[str]:
    """A process that claims KEY on ``url`` first, says so, and sleeps in its handler."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import asyncio
                from retrysafe.database import Database
                from retrysafe.idempotency.decisions import Execute
                from retrysafe.idempotency.records import RecordKey
                from retrysafe.stores.sql import SqlIdempotencyStore

                async def main():
                    store = SqlIdempotencyStore(Database({url!r}))
                    key = RecordKey({KEY.organization_id!r}, {KEY.key!r})
                    async with store.attempt(key, "fp", now={NOW}, ttl={TTL}) as decision:
                        assert isinstance(decision, Execute)
                        print("running", flush=True)
                        await asyncio.sleep(60)

                asyncio.run(main())
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_a_killed_process_leaves_the_key_to_the_next_retry_at_once(
    database: Database,
) -> None:
    """SIGKILL mid-request: nothing recorded, no lease to wait out; the retry runs."""
    holder = _holder(database.url)
    store = SqlIdempotencyStore(database)
    try:
        assert holder.stdout is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == "running"
        async with store.attempt(KEY, "fp", now=NOW + 1, ttl=TTL) as duplicate:
            assert isinstance(duplicate, InFlight)
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.to_thread(holder.wait, 10)
        async with store.attempt(KEY, "fp", now=NOW + 2, ttl=TTL) as retry:
            assert isinstance(retry, Execute)
            await retry.attempt.complete(CREATED)
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    async with store.attempt(KEY, "fp", now=NOW + 3, ttl=TTL) as replay:
        assert replay == Replay(CREATED)
