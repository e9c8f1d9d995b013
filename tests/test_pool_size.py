"""``--db-pool-size``: the most PostgreSQL connections one server process ever opens.

Deployments size PostgreSQL's ``max_connections`` as processes × pool size, so the
pool must never overflow, and a request that cannot get a connection in time must
be a 503 the client retries with the same key, not a 500.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import NamedTuple

import asyncpg
import httpx
import pytest
from tests.conftest import new_api_key

from retrysafe.config import ConfigError, settings_from_env
from retrysafe.database import Database, DatabaseUnavailable
from server_process import start_server

POOL = 3
TIMEOUT = 30.0


def test_the_pool_size_is_read_from_the_environment_and_checked() -> None:
    """Worker processes get it as RETRYSAFE_DB_POOL_SIZE; zero connections is refused."""
    assert settings_from_env({"RETRYSAFE_DB_POOL_SIZE": "3"}).db_pool_size == 3
    with pytest.raises(ConfigError, match="--db-pool-size / RETRYSAFE_DB_POOL_SIZE"):
        settings_from_env({"RETRYSAFE_DB_POOL_SIZE": "0"})


@pytest.mark.postgres
async def test_an_exhausted_pool_is_unavailable_not_an_error(postgres_url: str) -> None:
    """With every connection held, the next caller waits pool_timeout, then gets a 503's error."""
    db = Database(postgres_url, pool_size=2, pool_timeout=0.3)
    try:
        async with db.read(), db.read():
            with pytest.raises(DatabaseUnavailable):
                async with db.read():
                    pass  # pragma: no cover - no third connection may be opened
        async with db.read():
            pass  # given back, the connections serve again
    finally:
        await db.dispose()


class Sessions(NamedTuple):
    total: int
    waiting: int
    """Those waiting for a lock: the creates held up by the test's LOCK TABLE."""


async def server_sessions(url: str, *, exclude: int) -> Sessions:
    """The sessions on ``url``'s database but this one and ``exclude`` (the test's own)."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock')"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND pid <> $1",
            exclude,
        )
    finally:
        await conn.close()
    return Sessions(row[0], row[1])


@pytest.mark.slow
@pytest.mark.postgres
async def test_serve_opens_at_most_pool_size_connections(tmp_path: Path, postgres_url: str) -> None:
    """Eight creates stuck behind a lock use three connections; the rest queue, then all run."""
    server = start_server(
        ["--database", postgres_url, "--db-pool-size", str(POOL), "--rate-limit", "1000/second"],
        cwd=tmp_path,
    )
    try:
        server.wait_healthy(timeout=TIMEOUT)

        secret = new_api_key(postgres_url, "pool")
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        body = json.dumps({"data": {"attributes": {"name_first": "Ada"}}})
        blocker = await asyncpg.connect(postgres_url)
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=TIMEOUT, limits=limits
        ) as client:
            held = blocker.transaction()
            await held.start()
            await blocker.execute("LOCK TABLE accounts IN SHARE MODE")
            creates = [
                asyncio.create_task(client.post("/api/v1/accounts", content=body, headers=headers))
                for _ in range(8)
            ]
            # Counted from a second session: in the blocker's transaction pg_stat_activity
            # is a snapshot that never changes.
            sessions = await server_sessions(postgres_url, exclude=blocker.get_server_pid())
            for _ in range(int(TIMEOUT / 0.05)):
                if sessions.waiting >= POOL:
                    break
                await asyncio.sleep(0.05)
                sessions = await server_sessions(postgres_url, exclude=blocker.get_server_pid())
            await asyncio.sleep(0.3)  # room for a fourth connection, were one to open
            sessions = await server_sessions(postgres_url, exclude=blocker.get_server_pid())
            await held.commit()
            answers = await asyncio.wait_for(asyncio.gather(*creates), TIMEOUT)
        await blocker.close()
    finally:
        server.stop()
    assert sessions == Sessions(total=POOL, waiting=POOL)
    assert [answer.status_code for answer in answers] == [201] * 8
