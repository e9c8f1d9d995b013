"""Throwaway PostgreSQL databases on the local server, for the suites that run there."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SKIP_REASON = "PostgreSQL is not reachable on 127.0.0.1:5432"


def url_of(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


async def reachable() -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(ADMIN_URL), timeout=3)
    except Exception:  # any failure to connect means there is no usable server
        return False
    await conn.close()
    return True


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(template: str | None = None) -> str:
    """A new database (a copy of ``template`` when given); returns its name."""
    name = "retrysafe_test_" + uuid.uuid4().hex[:12]
    copy = f' TEMPLATE "{template}"' if template else ""
    await admin(f'CREATE DATABASE "{name}"{copy}')
    return name


async def drop_database(name: str) -> None:
    # Servers under test may still hold pooled connections; FORCE ends them.
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
