"""What a create and a replay send the database, through the whole service, on both databases.

Each statement (SQLite) or round trip (PostgreSQL) is CPU and latency on every
request, so their number is pinned here rather than left to a timing:

- the API-key lookup brings the request's idempotency record in the same
  statement (a ``LEFT JOIN``), so the store never reads the record itself: a
  replay is **one** statement on either database;
- a create on a new key is that lookup, then the unit that writes the record and
  the account together: on SQLite one group commit on the writer (its ``BEGIN``,
  two inserts and ``COMMIT``, no read, no savepoint unless a unit of the group
  fails); on PostgreSQL the one statement of the unit, which tries the key's
  advisory lock before it claims (a held key is 409 at once, not a wait on its
  holder's record: ``tests/test_multiprocess.py``): **two** round trips.

The record still decides: a second key's lookup in another organization finds no
record (the join is on the key's own organization), and a wrong secret is 401.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tests.database.round_trips import asyncpg_round_trips, sqlite_statements
from tests.support.lifespan import running

from retrysafe.database import Database
from retrysafe.service.admin import create_api_key
from retrysafe.service.app import create_app
from retrysafe.settings import Settings

# The key lookup returns the record's columns beside the key's (joined plainly on SQLite,
# through a LATERAL subquery named "record" on PostgreSQL); the counted text is shortened
# in its middle, so the match is on its start.
_BRINGS_THE_RECORD = re.compile(r"api_keys\.scopes, (idempotency_records|record)\.organization_id")


def _body(n: int) -> dict[str, object]:
    return {"data": {"attributes": {"name_first": "Ada", "reference_id": f"ref-{n}"}}}


def _counter(db: Database) -> AbstractContextManager[list[str]]:
    return sqlite_statements() if db.is_sqlite else asyncpg_round_trips()


@asynccontextmanager
async def _service(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=db.url,
        rate_limit="1000000/second",
        api_log_retention=0,  # no background batches in the count
        document_dir=tmp_path / "documents",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as client,
    ):
        yield client


async def _post(client: httpx.AsyncClient, secret: str, key: str, n: int) -> httpx.Response:
    return await client.post(
        "/accounts",
        json=_body(n),
        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": key},
    )


@pytest.fixture
def counted(database: Database) -> Iterator[list[str]]:
    with _counter(database) as sent:
        yield sent


async def test_a_replay_is_one_statement_and_a_create_sends_no_read_of_the_record(
    database: Database, counted: list[str], tmp_path: Path
) -> None:
    _, secret = await create_api_key(database, "acme")
    async with _service(database, tmp_path) as client:
        # Warm: connections opened (their set-up statements), statements prepared.
        for n in range(2):
            assert (await _post(client, secret, f"warm-{n}", n)).status_code == 201
        assert (await _post(client, secret, "warm-0", 0)).status_code == 201

        counted.clear()
        created = await _post(client, secret, "new-key", 10)
        assert created.status_code == 201, created.text
        assert "idempotent-replayed" not in created.headers
        create = list(counted)

        counted.clear()
        replayed = await _post(client, secret, "new-key", 10)
        assert replayed.status_code == 201
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.content == created.content
        replay = list(counted)

    lookup = [s for s in create if "FROM api_keys" in s]
    assert len(lookup) == 1, create
    assert _BRINGS_THE_RECORD.search(lookup[0]), create
    assert len(replay) == 1, replay
    assert _BRINGS_THE_RECORD.search(replay[0]), replay
    reads = [s for s in create if "SELECT" in s and "INSERT" not in s and "pg_try" not in s]
    assert reads == lookup, create  # the record is never read on its own
    if database.is_sqlite:
        assert [s.split()[0] for s in create] == [
            "SELECT",
            "BEGIN",
            "INSERT",
            "INSERT",
            "COMMIT",
        ], create
    else:
        # The lookup, then one statement that tries the key's lock, claims it as
        # completed and inserts the account.
        assert len(create) == 2, create
        assert "pg_try_advisory_xact_lock" in create[1], create
        assert "INSERT INTO accounts" in create[1], create


async def test_the_prefetched_record_is_the_key_organizations_only(
    database: Database, tmp_path: Path
) -> None:
    """Another organization's key with the same Idempotency-Key executes; a wrong secret is 401."""
    _, acme = await create_api_key(database, "acme")
    _, globex = await create_api_key(database, "globex")
    async with _service(database, tmp_path) as client:
        first = await _post(client, acme, "shared-key", 1)
        assert first.status_code == 201
        other = await _post(client, globex, "shared-key", 1)
        assert other.status_code == 201
        assert "idempotent-replayed" not in other.headers
        assert other.json()["data"]["id"] != first.json()["data"]["id"]
        wrong = await _post(client, acme[:-2] + "xx", "shared-key", 1)
        assert wrong.status_code == 401
        assert (await _post(client, acme, "shared-key", 1)).headers["idempotent-replayed"] == "true"
        mismatch = await _post(client, acme, "shared-key", 2)
        assert mismatch.status_code == 422
