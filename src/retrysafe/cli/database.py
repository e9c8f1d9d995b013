"""Open the database a command names, creating and migrating it when new (SPEC §5)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from retrysafe import config
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.config import BY_FIELD, ConfigError, display_url
from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.database.migrate import MigrationProgress
from retrysafe.settings import DEFAULT_DATABASE_URL

__all__ = ["database_source", "nothing", "run_with_database", "shown_database"]

T = TypeVar("T")


async def nothing(_db: Database) -> None:
    """The work of a command that only needs the database migrated."""


def shown_database(url: str) -> str:
    """Where ``url`` is, as a person can find it: a SQLite file's absolute path, else the URL.

    A relative SQLite path depends on the working directory, which is how a key
    created in one directory ends up in a database no server reads; the absolute
    path says which file it was. PostgreSQL URLs are shown without the password.
    """
    path = _sqlite_path(url)
    if path is None:
        return display_url(url)
    return path if path == ":memory:" else str(Path(path).expanduser().resolve())


def database_source(url: str) -> str:
    """Why a command uses ``url``: `` (from RETRYSAFE_DATABASE)``, the default, or '' (the flag).

    Told from the value: click gives the flag precedence over the variable, so a
    URL equal to the variable came from it (or from a flag repeating it, no harm).
    """
    if url == os.environ.get(BY_FIELD["database_url"].env):
        return f" (from {BY_FIELD['database_url'].env})"
    if url == DEFAULT_DATABASE_URL:
        return " (the default, relative to the working directory)"
    return ""


def run_with_database(
    url: str,
    work: Callable[[Database], Awaitable[T]],
    *,
    progress: MigrationProgress | None = None,
    announce: bool = True,
) -> T:
    """Open ``url``, create and migrate it when new, run ``work`` on it and close it.

    On stderr it says which database it used (``announce=False`` leaves that to
    the caller, as ``serve``'s banner does), and says loudly when it had to create
    one: SPEC §5 has every command create its database, so a mistyped path or a
    different working directory would otherwise go unnoticed.
    """
    try:
        config.check_database_url(url)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    where = shown_database(url) + database_source(url)

    async def run() -> T:
        from retrysafe.database.migrate import upgrade

        if url.startswith("sqlite"):
            created = _sqlite_is_new(url)
        else:
            created = await _create_postgres_database_if_missing(url)
        db = Database(url)
        try:
            await upgrade(db, progress=progress)
            if created:
                typer.echo(
                    f"retrysafe: created a new, empty database at {where}"
                    " — a server started elsewhere uses its own",
                    err=True,
                )
            elif announce:
                typer.echo(f"retrysafe: database {where}", err=True)
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


def _sqlite_path(url: str) -> str | None:
    """The file a ``sqlite://`` URL names (``:memory:`` for none); ``None`` for other URLs."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return database or ":memory:"


def _sqlite_is_new(url: str) -> bool:
    path = _sqlite_path(url)
    if path is None or path == ":memory:":
        return path == ":memory:"
    file = Path(path).expanduser()
    return not file.exists() or file.stat().st_size == 0


async def _create_postgres_database_if_missing(url: str) -> bool:
    """``CREATE DATABASE`` when the server answers but the database is not there yet.

    Returns whether it created the database.

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
            return False
        maintenance = target.set(database="postgres").render_as_string(hide_password=False)
        conn = await asyncpg.connect(maintenance)
        try:
            name = str(target.database).replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # another process created it between our two connections
        finally:
            await conn.close()
    except asyncpg.PostgresError as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    return True


def _reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's SQL echo and background links."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__
