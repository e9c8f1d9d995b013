"""Two real ``retrysafe serve`` processes on one PostgreSQL and one Redis act as one server.

SPEC §7: no in-process state may be required for correctness across processes. Each
process answers a duplicate it is running itself from memory, but a duplicate sent to
the *other* process meets only the database (the claim's advisory lock, the record),
and a rate limit holds for both together only because the counter lives in Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis
from tests.conftest import with_database
from tests.support import postgres

from retrysafe.database import Database
from retrysafe.service import admin
from retrysafe.service.api_keys import ALL_SCOPES
from server_process import ServerProcess, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
RATE = 100
RATE_LIMIT = f"{RATE}/hour"
"""A fixed window opens at a key's first hit; an hour long, no test run straddles two."""

REQUESTS = 40
TIMEOUT = 30.0
"""Bound on each wait in these tests; a slower run fails instead of hanging."""


@dataclass
class Cluster:
    """Two servers on different ports over one database and one Redis."""

    servers: tuple[ServerProcess, ServerProcess]
    database_url: str
    secrets: list[str]

    def new_key(self, org: str) -> str:
        """A fresh API key (the presented secret) of ``org``, created if absent."""

        async def create(db: Database) -> tuple[str, str]:
            return await admin.create_api_key(db, org, scopes=ALL_SCOPES)

        secret = with_database(self.database_url, create)[1]
        self.secrets.append(secret)
        return secret

    def server_for(self, i: int) -> ServerProcess:
        """Request ``i`` goes to the first server when even, the second when odd."""
        return self.servers[i % 2]


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)


def redis_reachable() -> bool:
    try:
        with redis_client() as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Both servers started at once on a new, empty database: they migrate it together."""
    with postgres.new_database_sync() as url:
        if not redis_reachable():
            pytest.skip(f"Redis is not reachable at {REDIS_URL}")
        cwd = tmp_path_factory.mktemp("cluster")
        args = ["--database", url, "--redis", REDIS_URL, "--rate-limit", RATE_LIMIT]
        servers = (start_server(args, cwd=cwd), start_server(args, cwd=cwd))
        built = Cluster(servers, url, [])
        try:
            for server in servers:
                server.wait_healthy(timeout=TIMEOUT)
            yield built
        finally:
            for server in servers:
                server.stop()
            _forget_rate_limits(built.secrets)


def _forget_rate_limits(secrets: list[str]) -> None:
    """Delete this module's counters from the shared Redis; each key names its secret's hash."""
    with redis_client() as client:
        for secret in secrets:
            digest = hashlib.sha256(f"Bearer {secret}".encode()).hexdigest()
            stale = list(client.scan_iter(match=f"*key:{digest}*"))
            if stale:
                client.delete(*stale)


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One client per server, each able to hold every request open at once."""
    limits = httpx.Limits(max_connections=REQUESTS)
    async with (
        httpx.AsyncClient(
            base_url=cluster.servers[0].base_url, timeout=TIMEOUT, limits=limits
        ) as a,
        httpx.AsyncClient(
            base_url=cluster.servers[1].base_url, timeout=TIMEOUT, limits=limits
        ) as b,
    ):
        yield a, b


CREATE_BODY = json.dumps({"data": {"attributes": {"name_first": "Ada", "name_last": "Lovelace"}}})


async def post_create(
    client: httpx.AsyncClient, secret: str, idempotency_key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await client.post("/api/v1/accounts", content=CREATE_BODY, headers=headers)


async def organization_rows(url: str, org: str) -> tuple[int, list[tuple[str, str]]]:
    """How many accounts ``org`` has, and its idempotency records as (key, status)."""
    conn = await asyncpg.connect(url)
    try:
        org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", org)
        accounts = await conn.fetchval(
            "SELECT count(*) FROM accounts WHERE organization_id = $1", org_id
        )
        records = await conn.fetch(
            "SELECT key, status FROM idempotency_records WHERE organization_id = $1", org_id
        )
        return int(accounts), [(row["key"], row["status"]) for row in records]
    finally:
        await conn.close()


def assert_in_progress(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert int(response.headers["retry-after"]) >= 1


async def test_forty_duplicates_across_two_processes_run_once_while_the_first_is_held(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """With the first execution held open, all 39 duplicates, in either process, get 409.

    The test locks the organization's row, so whichever request claims the key
    first blocks at the end of its unit (the account's foreign-key check), key lock
    held, claim uncommitted. Its own process then answers the duplicates it
    receives from memory, the other process only through the database: if either
    let one through, it would queue behind the row lock too and fewer than 39
    answers would arrive. Released, the first commits; every retry replays its bytes.
    (Under a lock on the table itself, each process's first duplicate would wait
    with every other write instead: tests/test_workers.py holds that case too.)
    """
    org = "multiprocess-held"
    secret = cluster.new_key(org)
    blocker = await asyncpg.connect(cluster.database_url)
    try:
        held = blocker.transaction()
        await held.start()
        await blocker.execute("SELECT 1 FROM organizations WHERE name = $1 FOR UPDATE", org)
        tasks = {
            asyncio.create_task(post_create(clients[i % 2], secret, "held-key")): i
            for i in range(REQUESTS)
        }
        pending: set[asyncio.Task[httpx.Response]] = set(tasks)
        deadline = time.monotonic() + TIMEOUT
        while len(pending) > 1 and time.monotonic() < deadline:
            _, pending = await asyncio.wait(
                pending, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
            )
        assert len(pending) == 1, f"{REQUESTS - len(pending)} answered while the first was held"
        (first,) = pending
        refused = [(tasks[task], task.result()) for task in tasks if task is not first]
        for _, response in refused:
            assert_in_progress(response)
        # Both processes refused: the one running the first from memory, the other
        # through the database alone.
        by_server = Counter(i % 2 for i, _ in refused)
        assert by_server == {
            tasks[first] % 2: REQUESTS // 2 - 1,
            1 - tasks[first] % 2: REQUESTS // 2,
        }
        await held.commit()
        original = await asyncio.wait_for(first, TIMEOUT)
    finally:
        await blocker.close()

    assert original.status_code == 201, original.text
    assert "idempotent-replayed" not in original.headers
    # Retried one at a time, alternating processes: each retry meets only the record.
    retry_secret = cluster.new_key(org)  # another key of the organization shares its records
    for i, _ in refused:
        retry = await post_create(clients[i % 2], retry_secret, "held-key")
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.content == original.content
        assert retry.headers["location"] == original.headers["location"]
    assert await organization_rows(cluster.database_url, org) == (1, [("held-key", "completed")])


async def test_forty_concurrent_duplicates_across_two_processes_run_once(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """Free-running duplicates: each answer is the original, its replay, or 409; one account."""
    org = "multiprocess-free"
    first_secret, retry_secret = cluster.new_key(org), cluster.new_key(org)
    deadline = time.monotonic() + TIMEOUT

    async def until_answered(i: int) -> httpx.Response:
        """Send request ``i``, retrying each 409 after its ``Retry-After`` plus jitter.

        The jitter matters: a 409 can also come from meeting a concurrent duplicate
        that is only replaying, and retries sent in lockstep meet each other again.
        """
        response = await post_create(clients[i % 2], first_secret, "free-key")
        while response.status_code == 409:
            assert_in_progress(response)
            assert time.monotonic() < deadline, "a duplicate kept getting 409"
            await asyncio.sleep(int(response.headers["retry-after"]) + random.random())
            response = await post_create(clients[i % 2], retry_secret, "free-key")
        return response

    final = await asyncio.gather(*(until_answered(i) for i in range(REQUESTS)))
    assert [response.status_code for response in final] == [201] * REQUESTS
    originals = [r for r in final if "idempotent-replayed" not in r.headers]
    assert len(originals) == 1, "the request executed more than once"
    for response in final:
        assert response.content == originals[0].content
        assert response.headers["location"] == originals[0].headers["location"]
    assert await organization_rows(cluster.database_url, org) == (1, [("free-key", "completed")])


async def test_a_rate_limit_holds_for_both_processes_together(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """Creates over the limit, split across both: exactly the limit succeeds, counted in Redis.

    Kept per process, each would let its 65 through (130 in all); shared, the
    window's counter gives every success a distinct ``RateLimit-Remaining``.
    """
    org = "multiprocess-rate"
    secret = cluster.new_key(org)
    sent = RATE + 30
    gate = asyncio.Semaphore(16)
    started = time.monotonic()

    async def one(i: int) -> tuple[int, httpx.Response]:
        async with gate:
            return i, await post_create(clients[i % 2], secret)

    answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(sent))), TIMEOUT)
    elapsed = time.monotonic() - started

    created = [(i, r) for i, r in answers if r.status_code == 201]
    limited = [(i, r) for i, r in answers if r.status_code == 429]
    assert (len(created), len(limited)) == (RATE, sent - RATE), Counter(
        r.status_code for _, r in answers
    )
    assert {i % 2 for i, _ in created} == {0, 1}
    remaining = sorted(int(r.headers["ratelimit-remaining"]) for _, r in created)
    assert remaining == list(range(RATE)), "two requests saw the same count"
    resets = []
    for _, response in created + limited:
        assert response.headers["ratelimit-limit"] == str(RATE)
        resets.append(int(response.headers["ratelimit-reset"]))
    for _, response in limited:
        assert response.json()["errors"][0]["code"] == "rate_limited"
        assert response.headers["ratelimit-remaining"] == "0"
        reset = int(response.headers["ratelimit-reset"])
        assert int(response.headers["retry-after"]) == max(1, reset)
    # One window, read by both processes from Redis: every reset counts down to one moment.
    assert 3600 - elapsed - 2 <= min(resets) <= max(resets) <= 3600
    assert max(resets) - min(resets) <= elapsed + 2
    assert await organization_rows(cluster.database_url, org) == (RATE, [])
