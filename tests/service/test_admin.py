"""Operator helpers (organizations, keys) and the background purge of idempotency records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.database.schema import api_keys, idempotency_records, organizations
from retrysafe.service import admin
from retrysafe.service.authenticator import DatabaseAuthenticator

from .api_calls import body


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


async def test_create_organization_is_get_or_create(db: Database) -> None:
    org_id, created = await admin.create_organization(db, "acme")
    again, created_again = await admin.create_organization(db, "acme")
    assert (again, created, created_again) == (org_id, True, False)
    assert org_id.startswith("org_")


async def test_create_organization_sets_the_quota_only_when_given(db: Database) -> None:
    await admin.create_organization(db, "acme", inquiry_quota=5)
    await admin.create_organization(db, "acme")
    async with db.read() as conn:
        quota = await conn.scalar(select(organizations.c.inquiry_quota))
    assert quota == 5


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_organization_names_are_checked(db: Database, name: str) -> None:
    with pytest.raises(ValueError, match="organization name"):
        await admin.create_organization(db, name)


async def test_negative_quota_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="negative"):
        await admin.create_organization(db, "acme", inquiry_quota=-1)


async def test_api_key_is_stored_only_as_a_hash_and_authenticates(db: Database) -> None:
    key_id, secret = await admin.create_api_key(db, "acme", scopes=["accounts:read"])
    async with db.read() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert secret.split(".", 1)[1] not in str(tuple(row))
    principal = await DatabaseAuthenticator(db)(secret)
    assert principal is not None
    assert principal.key_id == key_id
    assert principal.scopes == frozenset({"accounts:read"})
    assert await DatabaseAuthenticator(db)(secret + "x") is None
    assert await DatabaseAuthenticator(db)("not a key") is None


@pytest.mark.parametrize("scopes", [["accounts:delete"], []])
async def test_unknown_or_no_scopes_are_refused(db: Database, scopes: list[str]) -> None:
    with pytest.raises(ValueError, match="scope"):
        await admin.create_api_key(db, "acme", scopes=scopes)
    async with db.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(organizations)) == 0


async def test_revoke(db: Database) -> None:
    key_id, secret = await admin.create_api_key(db, "acme")
    assert await admin.revoke_api_key(db, key_id)
    assert await admin.revoke_api_key(db, key_id)  # revoking twice is not an error
    assert not await admin.revoke_api_key(db, "key_unknown")
    assert await DatabaseAuthenticator(db)(secret) is None


def test_expired_idempotency_records_are_purged_in_the_background(live_server) -> None:
    server = live_server(idempotency_ttl=1, purge_interval=0.2)
    with server.client(server.new_key()) as http:
        response = http.post("/accounts", json=body(), headers={"Idempotency-Key": "k1"})
        assert response.status_code == 201

    def remaining() -> int:
        async def count(db: Database) -> int:
            async with db.read() as conn:
                total = await conn.scalar(select(func.count()).select_from(idempotency_records))
            return int(total or 0)

        return server.on_database(count)

    assert remaining() == 1
    deadline = time.monotonic() + 5
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert remaining() == 0
    assert httpx.get(server.url + "/health").status_code == 200
