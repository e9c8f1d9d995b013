"""Create and upgrade a database to the newest schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from retrysafe.database.engine import Database, DatabaseUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"

_PG_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('retrysafe:migrate', 0))")
"""Held by the migrating transaction; the store's key locks hash other text, never this."""


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


class UnknownSchemaRevision(DatabaseUnavailable):
    """A newer release migrated the database: this one does not know its schema.

    Raised instead of Alembic's own error so that starting an older release after a
    newer one migrated (a rollback of the code alone) is one clear line, not a traceback.
    """


MigrationProgress = Callable[[int, int, str], None]
"""Hears ``(0, total, "")`` first, then ``(done, total, revision)`` after each revision."""


def _upgrade(connection: Connection, progress: MigrationProgress | None = None) -> None:
    config = _alembic_config(connection)
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    newer = sorted(set(MigrationContext.configure(connection).get_current_heads()) - known)
    if newer:
        raise UnknownSchemaRevision(
            f"the database is at schema revision {', '.join(newer)}, which this release of"
            " retrysafe does not know: a newer release migrated it; run that release or a later one"
        )
    if progress is not None:
        current = MigrationContext.configure(connection).get_current_revision()
        total = sum(
            1 for _ in ScriptDirectory.from_config(config).iterate_revisions("head", current)
        )
        applied = 0
        progress(0, total, "")

        def on_version_apply(*, step: Any, **_: Any) -> None:
            nonlocal applied
            applied += 1
            progress(applied, total, str(step.up_revision_id))

        # migrations/env.py hands these to Alembic's context.
        config.attributes["on_version_apply"] = (on_version_apply,)
    command.upgrade(config, "head")


async def upgrade(database: Database, *, progress: MigrationProgress | None = None) -> None:
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
        await conn.run_sync(_upgrade, progress)
        await conn.commit()


def _make_parent_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
