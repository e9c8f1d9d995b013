"""Fresh databases for one benchmark run: a SQLite file, or a throwaway PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The maintenance database the throwaway databases are created from and dropped on."""


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server answers at :data:`POSTGRES_ADMIN_URL`."""


def _server_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _admin(statement: str) -> None:
    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(POSTGRES_ADMIN_URL), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise PostgresUnavailable(f"{POSTGRES_ADMIN_URL}: {exc}") from exc
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def postgres_reachable() -> bool:
    try:
        asyncio.run(_admin("SELECT 1"))
    except PostgresUnavailable:
        return False
    return True


@contextlib.contextmanager
def fresh(kind: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (sqlite or postgres), gone afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = "retrysafe_bench_" + uuid.uuid4().hex[:12]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _server_url(name)
    finally:
        # WITH (FORCE): a server that did not exit cleanly may still hold connections.
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
