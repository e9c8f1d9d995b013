"""PostgreSQL and Redis going away under a running server, and coming back.

Each test starts its own PostgreSQL or Redis (``tests/support/throwaway.py``) on
its own port and data directory, so stopping it hurts no other test. The
servers under test are real ``create_app`` servers on loopback HTTP.

- PostgreSQL down: every request that needs it is 503 ``service_unavailable``
  with ``Retry-After``, never a 500; nothing is half-written; the same server
  process serves again once PostgreSQL is back, without a restart.
- Redis (rate-limit storage) down: requests are still served and limited per
  process, one warning is logged, never a 500 or 503; limits are shared again
  once Redis is back.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
import structlog
from structlog.typing import EventDict
from tests.conftest import LiveServer, run_sync
from tests.support.throwaway import (
    ThrowawayPostgres,
    ThrowawayRedis,
    skip_without_postgres_binaries,
    skip_without_redis_binary,
)

from retrysafe.database import Database
from retrysafe.database.schema import accounts, idempotency_records

pytestmark = pytest.mark.slow

RECOVERY_TIMEOUT = 15.0
"""Seconds a server may take to notice that a dependency is back."""


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """One PostgreSQL of this module's own (``initdb`` takes a second; tests share it)."""
    skip_without_postgres_binaries()
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def postgres_server(
    throwaway_postgres: ThrowawayPostgres, live_server: Callable[..., LiveServer]
) -> Iterator[LiveServer]:
    """A server on a new database of the throwaway PostgreSQL, which is running again after."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = throwaway_postgres.url()
    _run_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield live_server(database_url=throwaway_postgres.url(name))
    finally:
        throwaway_postgres.start()  # a no-op when the test left it running


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    skip_without_redis_binary()
    with ThrowawayRedis() as server:
        yield server


def _run_admin(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_sync(run)


def _create_body(reference_id: str) -> dict[str, object]:
    return {"data": {"attributes": {"reference_id": reference_id, "name_first": "Ada"}}}


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    [error] = response.json()["errors"]
    assert error["code"] == "service_unavailable"
    assert error["status"] == "503"


def _until_answered(send: Callable[[], httpx.Response]) -> httpx.Response:
    """``send()`` again while it answers 503 (the database is still coming back)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while (response := send()).status_code == 503:
        assert time.monotonic() < deadline, f"still 503 after {RECOVERY_TIMEOUT} s"
        time.sleep(0.05)
    return response


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {RECOVERY_TIMEOUT} s"
        time.sleep(0.05)


@pytest.mark.postgres
def test_postgres_down_is_503_with_retry_after_and_the_same_process_recovers(
    throwaway_postgres: ThrowawayPostgres, postgres_server: LiveServer
) -> None:
    """Stop PostgreSQL: 503s (never 500), a keyed create records nothing; start it: served."""
    key = postgres_server.new_key()
    with postgres_server.client(key) as http:
        assert http.get("/accounts").status_code == 200
        throwaway_postgres.stop()
        outage = [
            http.get("/accounts"),
            http.post("/accounts", json=_create_body("ref-1"), headers={"Idempotency-Key": "k1"}),
            http.post("/accounts", json=_create_body("ref-1"), headers={"Idempotency-Key": "k1"}),
            httpx.get(postgres_server.url + "/health", timeout=30),
        ]
        for response in outage:
            _assert_unavailable(response)
        throwaway_postgres.start()
        _wait_until(lambda: http.get("/accounts").status_code == 200, "the server serves again")
        created = http.post(
            "/accounts", json=_create_body("ref-1"), headers={"Idempotency-Key": "k1"}
        )
        assert created.status_code == 201, created.text
        assert "idempotent-replayed" not in created.headers
        replayed = http.post(
            "/accounts", json=_create_body("ref-1"), headers={"Idempotency-Key": "k1"}
        )
        assert replayed.status_code == 201
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.content == created.content
    assert _count(postgres_server, accounts) == 1


def _count(server: LiveServer, table: sa.Table) -> int:
    async def count(db: Database) -> int:
        async with db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    return server.on_database(count)


@pytest.mark.postgres
def test_postgres_killed_under_keyed_creates_leaves_nothing_half_written(
    throwaway_postgres: ThrowawayPostgres, postgres_server: LiveServer
) -> None:
    """SIGKILL PostgreSQL mid-stream; retrying every key afterwards creates each account once.

    Requests in flight at the kill answer 503 (or 201 if their commit got through);
    none answers 500. Each retry with the same key then executes once or replays
    the 201 already sent, so every reference id ends with exactly one account.
    The first RACING requests race the kill; the rest wait for it, so the outage
    is certainly met whatever the machine's speed.
    """
    key = postgres_server.new_key()
    references = [f"ref-{index}" for index in range(24)]
    racing = 12
    first: dict[str, httpx.Response] = {}
    answered = threading.Semaphore(0)
    killed = threading.Event()

    def create(http: httpx.Client, reference: str) -> httpx.Response:
        return http.post(
            "/accounts", json=_create_body(reference), headers={"Idempotency-Key": reference}
        )

    with postgres_server.client(key) as http:

        def first_attempt(index: int, reference: str) -> None:
            if index >= racing:
                assert killed.wait(timeout=30)
            first[reference] = create(http, reference)
            answered.release()

        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(first_attempt, *pair) for pair in enumerate(references)]
            for _ in range(4):
                assert answered.acquire(timeout=30)
            throwaway_postgres.kill()
            killed.set()
            for future in futures:
                future.result()
        throwaway_postgres.start()

        statuses = {response.status_code for response in first.values()}
        assert statuses <= {201, 503}, [r.text for r in first.values() if r.status_code >= 500]
        assert {first[reference].status_code for reference in references[racing:]} == {503}
        for reference in references:
            retry = _until_answered(partial(create, http, reference))
            assert retry.status_code == 201, retry.text
            if first[reference].status_code == 201:
                assert retry.content == first[reference].content
    assert _count(postgres_server, accounts) == len(references)
    assert _count(postgres_server, idempotency_records) == len(references)


def _events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [log for log in logs if log["event"] == name]


@pytest.mark.redis
def test_redis_down_degrades_rate_limits_to_each_process_and_recovers(
    throwaway_redis: ThrowawayRedis, live_server: Callable[..., LiveServer]
) -> None:
    """Two servers share a limit through Redis; Redis stops: each limits alone; it returns: shared.

    During the outage nothing answers 500 or 503, the headers stay right, and each
    process logs one warning for the outage and one for the recovery.
    """
    with structlog.testing.capture_logs() as logs:
        servers = [
            live_server(redis_url=throwaway_redis.url, rate_limit="4/minute") for _ in range(2)
        ]
        key = servers[0].new_key()
        clients = [server.client(key) for server in servers]
        anonymous = [httpx.Client(base_url=server.api_url, timeout=30) for server in servers]
        try:
            shared = [clients[i % 2].get("/accounts") for i in range(5)]
            assert [r.status_code for r in shared] == [200, 200, 200, 200, 429]

            throwaway_redis.stop()
            for http in clients:
                alone = [http.get("/accounts") for _ in range(5)]
                assert [r.status_code for r in alone] == [200, 200, 200, 200, 429]
                remaining = [r.headers["ratelimit-remaining"] for r in alone]
                assert remaining == ["3", "2", "1", "0", "0"]
                assert alone[-1].json()["errors"][0]["code"] == "rate_limited"
            assert len(_events(logs, "rate_limit_storage_unreachable")) == 2

            throwaway_redis.start()  # empty: the outage's counts are gone with it
            # Requests without a key (401s, counted per address) give each process
            # its next probe, until both have found Redis again.

            def recovered(count: int, http: httpx.Client) -> bool:
                assert http.get("/accounts").status_code in (401, 429)
                return len(_events(logs, "rate_limit_storage_recovered")) >= count

            for count, http in enumerate(anonymous, start=1):
                _wait_until(partial(recovered, count, http), "the rate limiter uses Redis again")
            again = [clients[i % 2].get("/accounts") for i in range(5)]
            assert [r.status_code for r in again] == [200, 200, 200, 200, 429]
        finally:
            for http in (*clients, *anonymous):
                http.close()
    assert len(_events(logs, "rate_limit_storage_unreachable")) == 2
    assert len(_events(logs, "rate_limit_storage_recovered")) == 2
