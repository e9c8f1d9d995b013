"""Create and upgrade a database to the newest schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from retrysafe.database.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"

_PG_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('retrysafe:migrate', 0))")
"""Held by the migrating transaction; the store's key locks hash other text, never this."""


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade(database: Database) -> None:
    """Bring ``database`` to the newest revision; a no-op when it already is.

    Runs on the application's own async engine (Alembic's shared-connection
    recipe), so migrating needs no second, synchronous driver.

    Processes that start together (several machines rolling out at once) would each
    find the schema missing and create it, and all but one would fail on a table
    that already exists. So the migration first takes the database's write lock:
    ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL.
    The others wait for it, then find the schema current and change nothing.
    """
    if database.is_sqlite:
        _make_parent_dir(database.url)
    async with database.transaction() as conn:
        if not database.is_sqlite:
            await conn.execute(_PG_MIGRATION_LOCK)
        await conn.run_sync(_upgrade)
        await conn.commit()


def _make_parent_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
