"""``retrysafe serve`` processes: duplicates over two workers run once; SIGTERM drains.

Each worker listens on its own SO_REUSEPORT socket, so which process gets a
connection is the kernel's choice (a hash of the addresses). The tests hold the
database's write path shut while requests arrive: each worker lets at most its
first duplicate reach the database, where it waits, and answers the rest 409 from
memory. A second execution would have to pass the database's own guard (SQLite's
write lock, PostgreSQL's advisory lock and record), which is what holds across
processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.conftest import new_api_key, with_database

from retrysafe.database import Database
from retrysafe.service import admin
from retrysafe.service.api_keys import ALL_SCOPES
from server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow

WORKERS = 2
REQUESTS = 20
TIMEOUT = 30.0
"""Bound on each wait; SQLite's busy timeout (10 s) must outlast the hold, and does."""

BODY = json.dumps({"data": {"attributes": {"reference_id": "worker-ref", "name_first": "Ada"}}})


@asynccontextmanager
async def account_writes_held(url: str, organization: str | None = None) -> AsyncIterator[None]:
    """Block every insert into ``accounts`` (SQLite: every write) until the block ends.

    On PostgreSQL, given an ``organization``, its row is locked instead of the table:
    an insert of one of its accounts then waits at the end of its statement (the
    foreign key's check), after the statement has tried its idempotency key's lock,
    where a table lock stops every writer before it tries anything.
    """
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    blocker = await asyncpg.connect(url)
    try:
        async with blocker.transaction():
            if organization is None:
                await blocker.execute("LOCK TABLE accounts IN SHARE MODE")
            else:
                locked = await blocker.fetch(
                    "SELECT id FROM organizations WHERE name = $1 FOR UPDATE", organization
                )
                assert len(locked) == 1, organization
            yield
    finally:
        await blocker.close()


async def account_count(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("SELECT count(*) FROM accounts").fetchone()[0])
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM accounts"))
    finally:
        await conn.close()


@pytest.fixture
def workers_server(tmp_path: Path, empty_database_url: str) -> Iterator[tuple[ServerProcess, str]]:
    """``serve --workers 2`` on the database (which it creates), and an API key for it."""
    server = start_server(
        [
            "--workers",
            str(WORKERS),
            "--database",
            empty_database_url,
            "--rate-limit",
            "100000/second",
        ],
        cwd=tmp_path,
    )

    async def create_key(db: Database) -> tuple[str, str]:
        return await admin.create_api_key(db, "workers", scopes=ALL_SCOPES)

    try:
        server.wait_healthy(timeout=TIMEOUT)
        yield server, with_database(empty_database_url, create_key)[1]
    finally:
        server.stop()


async def test_duplicates_on_separate_connections_run_once_across_workers(
    workers_server: tuple[ServerProcess, str], empty_database_url: str
) -> None:
    """While held: one waiting request in all (SQLite: per worker) at most, the rest 409.

    On PostgreSQL only the request holding the key's advisory lock waits on the held
    organization: the other worker's meets that lock and gets 409 at once. On SQLite
    each worker's first waits for the write lock and then finds the record.
    """
    server, secret = workers_server
    sqlite = empty_database_url.startswith("sqlite")
    await _duplicates_run_once(
        server,
        secret,
        empty_database_url,
        account_writes_held(empty_database_url, None if sqlite else "workers"),
        most=WORKERS if sqlite else 1,
    )


@pytest.mark.postgres
@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
async def test_duplicates_under_a_table_lock_wait_with_every_write_then_run_once(
    workers_server: tuple[ServerProcess, str], empty_database_url: str
) -> None:
    """PostgreSQL, a lock on the ``accounts`` table itself (a migration's): each worker's
    first duplicate waits with every other write, as it would for any request; once the
    table is free again one of them runs and the other gets its record. Never two."""
    server, secret = workers_server
    await _duplicates_run_once(
        server,
        secret,
        empty_database_url,
        account_writes_held(empty_database_url),
        most=WORKERS,
    )


async def _duplicates_run_once(
    server: ServerProcess,
    secret: str,
    database_url: str,
    held: AbstractAsyncContextManager[None],
    *,
    most: int,
) -> None:
    """REQUESTS duplicates sent while ``held``: at most ``most`` wait, the rest are 409;
    then exactly one execution, every other answer its replay, one account."""
    headers = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/json",
        "Idempotency-Key": "workers-key",
    }

    async def post() -> httpx.Response:
        # A client per request: a connection each, for the kernel to hand to either worker.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
            return await client.post("/api/v1/accounts", content=BODY, headers=headers)

    async with held:
        tasks = [asyncio.create_task(post()) for _ in range(REQUESTS)]
        pending = set(tasks)
        deadline = time.monotonic() + TIMEOUT
        # Requests still on their way (not held) are answered soon: wait for them.
        while len(pending) > most and time.monotonic() < deadline:
            _, pending = await asyncio.wait(
                pending, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
            )
        assert len(pending) <= most, f"{len(pending)} requests got past their worker's guard"
    answers = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)

    # Each worker that received a request let its first through to the database; once
    # the hold ended, one of those ran and any other found its record.
    through = [answer for answer in answers if answer.status_code != 409]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert 1 <= len(through) <= most, [answer.status_code for answer in answers]
    assert [answer.status_code for answer in through] == [201] * len(through)
    originals = [answer for answer in through if "idempotent-replayed" not in answer.headers]
    assert len(originals) == 1, "the request executed more than once"
    assert {answer.content for answer in through} == {originals[0].content}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        for _ in range(REQUESTS):
            retry = await client.post("/api/v1/accounts", content=BODY, headers=headers)
            assert retry.status_code == 201, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.content == originals[0].content
    assert await account_count(database_url) == 1


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


async def test_sigterm_lets_the_request_in_flight_finish(
    tmp_path: Path, empty_database_url: str
) -> None:
    """A rolling restart's SIGTERM: no new connections, but the create running is answered.

    The create is held in flight by the lock; the process must stop listening,
    keep serving it until the lock goes, answer 201, and only then exit, cleanly.
    With ``--max-in-flight 1`` any other request is shed (503) while it runs,
    which is how the test knows it is in flight before sending the signal.
    """
    server = start_server(["--database", empty_database_url, "--max-in-flight", "1"], cwd=tmp_path)
    try:
        server.wait_healthy(timeout=TIMEOUT)

        secret = new_api_key(empty_database_url, "shutdown")
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client,
            httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as probe,
        ):
            async with account_writes_held(empty_database_url):

                def create() -> asyncio.Task[httpx.Response]:
                    return asyncio.create_task(
                        client.post("/api/v1/accounts", content=BODY, headers=headers)
                    )

                running = create()
                for _ in range(int(TIMEOUT / 0.1)):
                    await asyncio.sleep(0.1)
                    if running.done():
                        # Shed itself, by a probe that was still in flight: send it again.
                        assert running.result().status_code == 503, running.result().text
                        running = create()
                        continue
                    shed = await probe.get("/api/v1/accounts", headers=headers)
                    if shed.status_code == 503:
                        break
                assert shed.status_code == 503, "the create never showed as in flight"
                os.killpg(server.process.pid, signal.SIGTERM)
                for _ in range(int(TIMEOUT / 0.05)):
                    if refuses_connections(server.port):
                        break
                    await asyncio.sleep(0.05)
                assert refuses_connections(server.port), "still accepting after SIGTERM"
                assert not running.done(), "the held create finished before the hold ended"
            answer = await asyncio.wait_for(running, TIMEOUT)
        assert answer.status_code == 201, answer.text
        # uvicorn re-raises the signal once it has shut down, so the status reports SIGTERM.
        assert server.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM), server.log()
        assert "Application shutdown complete" in server.log()
    finally:
        server.stop()
    assert await account_count(empty_database_url) == 1
