"""Open the database a command names, creating and migrating it when new (SPEC §5)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from retrysafe import config
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.config import ConfigError, display_url
from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.database.migrate import MigrationProgress

__all__ = ["nothing", "run_with_database"]

T = TypeVar("T")


async def nothing(_db: Database) -> None:
    """The work of a command that only needs the database migrated."""


def run_with_database(
    url: str,
    work: Callable[[Database], Awaitable[T]],
    *,
    progress: MigrationProgress | None = None,
) -> T:
    """Open ``url``, create and migrate it when new, run ``work`` on it and close it."""
    try:
        config.check_database_url(url)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None

    async def run() -> T:
        from retrysafe.database.migrate import upgrade

        if not url.startswith("sqlite"):
            await _create_postgres_database_if_missing(url)
        db = Database(url)
        try:
            await upgrade(db, progress=progress)
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except ValueError as exc:
        # The admin functions refuse bad names, scopes and quotas with ValueError.
        raise BadInput(str(exc)) from None
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        raise CliError(f"cannot use the database {display_url(url)}: {_reason(exc)}") from None


async def _create_postgres_database_if_missing(url: str) -> None:
    """``CREATE DATABASE`` when the server answers but the database is not there yet.

    SPEC §5 has every command create its database when it is new; SQLite does that
    by opening the file, PostgreSQL needs the statement on a maintenance database.
    """
    import asyncpg

    target = make_url(url).set(drivername="postgresql")
    try:
        try:
            conn = await asyncpg.connect(target.render_as_string(hide_password=False))
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            await conn.close()
            return
        maintenance = target.set(database="postgres").render_as_string(hide_password=False)
        conn = await asyncpg.connect(maintenance)
        try:
            name = str(target.database).replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # another process created it between our two connections
        finally:
            await conn.close()
    except asyncpg.PostgresError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


def _reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's SQL echo and background links."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__
