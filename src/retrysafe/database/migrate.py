"""Create and upgrade a database to the newest schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from retrysafe.database.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


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
    """
    if database.is_sqlite:
        _make_parent_dir(database.url)
    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)


def _make_parent_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
