"""Operator actions on organizations and API keys, shared by the CLI and the tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.database.schema import api_keys, organizations
from retrysafe.service import api_keys as key_format
from retrysafe.service.serialization import timestamp
from retrysafe.service.statements import insert_unless_conflict

SCOPE_SEPARATOR = ","

_ORG_BY_NAME = select(organizations.c.id).where(organizations.c.name == bindparam("org_name"))


@dataclass(frozen=True, slots=True)
class ApiKeyListing:
    """What an operator may see of an API key: never its secret, nor the secret's hash."""

    id: str
    organization_id: str
    organization: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class OrganizationListing:
    id: str
    name: str
    inquiry_quota: int | None
    """``None``: no limit."""
    inquiries_used: int
    created_at: str


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > 200:
        raise ValueError("An organization name must be 1 to 200 characters and not blank.")
    return name


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(scopes))  # keeps the order given, drops repeats
    unknown = [s for s in chosen if s not in key_format.ALL_SCOPES]
    if unknown:
        raise ValueError(
            f"Unknown scope(s) {', '.join(unknown)}; known: {', '.join(key_format.ALL_SCOPES)}."
        )
    if not chosen:
        raise ValueError("An API key needs at least one scope.")
    return chosen


async def create_organization(
    db: Database, name: str, inquiry_quota: int | None = None
) -> tuple[str, bool]:
    """Get or create the organization ``name``; return ``(org_id, created)``.

    ``inquiry_quota`` sets its lifetime inquiry quota when given; ``None`` leaves
    the quota as it is (unlimited for a new organization).
    """
    _check_name(name)
    if inquiry_quota is not None and inquiry_quota < 0:
        raise ValueError("An inquiry quota cannot be negative.")
    async with db.write() as conn:
        org_id, created = await _get_or_create(db, conn, name)
        if inquiry_quota is not None:
            await conn.execute(
                update(organizations)
                .where(organizations.c.id == org_id)
                .values(inquiry_quota=inquiry_quota)
            )
    return org_id, created


async def create_api_key(
    db: Database, org_name: str, scopes: Iterable[str] = key_format.ALL_SCOPES
) -> tuple[str, str]:
    """Create a key for ``org_name`` (creating the organization if absent).

    Returns ``(key_id, secret)``; the secret is shown this once and only its hash is kept.
    """
    _check_name(org_name)
    chosen = _check_scopes(scopes)
    key_id, secret, secret_hash = key_format.new_key()
    async with db.write() as conn:
        org_id, _ = await _get_or_create(db, conn, org_name)
        await conn.execute(
            api_keys.insert().values(
                id=key_id,
                organization_id=org_id,
                secret_hash=secret_hash,
                scopes=SCOPE_SEPARATOR.join(chosen),
                created_at=timestamp(),
            )
        )
    return key_id, secret


async def revoke_api_key(db: Database, key_id: str) -> bool:
    """Revoke ``key_id`` at once in every process; ``False`` when there is no such key.

    Revoking a revoked key is not an error and keeps its first revocation time.
    """
    async with db.write() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(revoked_at=func.coalesce(api_keys.c.revoked_at, timestamp()))
        )
    return bool(result.rowcount)


async def list_api_keys(db: Database, org_name: str | None = None) -> list[ApiKeyListing]:
    """Every API key (of ``org_name`` when given), oldest first, without secrets or hashes."""
    # secret_hash is left out of the SELECT itself, so no caller can print it by mistake.
    query = (
        select(
            api_keys.c.id,
            api_keys.c.organization_id,
            organizations.c.name,
            api_keys.c.scopes,
            api_keys.c.created_at,
            api_keys.c.revoked_at,
        )
        .join(organizations, organizations.c.id == api_keys.c.organization_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    if org_name is not None:
        query = query.where(organizations.c.name == org_name)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        ApiKeyListing(
            id=row.id,
            organization_id=row.organization_id,
            organization=row.name,
            scopes=tuple(row.scopes.split(SCOPE_SEPARATOR)),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )
        for row in rows
    ]


async def list_organizations(db: Database) -> list[OrganizationListing]:
    """Every organization, by name."""
    columns = [organizations.c[field.name] for field in fields(OrganizationListing)]
    query = select(*columns).order_by(organizations.c.name)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [OrganizationListing(**row._mapping) for row in rows]


async def _get_or_create(db: Database, conn: AsyncConnection, name: str) -> tuple[str, bool]:
    existing = await conn.scalar(_ORG_BY_NAME, {"org_name": name})
    if existing is not None:
        return str(existing), False
    org_id = ids.new_id("org")
    insert = insert_unless_conflict(db, organizations, (organizations.c.name,), organizations.c.id)
    inserted = await conn.execute(
        insert, {"id": org_id, "name": name, "inquiries_used": 0, "created_at": timestamp()}
    )
    if inserted.first() is not None:
        return org_id, True
    # Another process created it between our read and our insert.
    return str(await conn.scalar(_ORG_BY_NAME, {"org_name": name})), False
