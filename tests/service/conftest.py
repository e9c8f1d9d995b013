"""The service suite runs once per database: SQLite, and PostgreSQL when it is reachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import run_sync
from tests.stores.conftest import POSTGRES_ADMIN_URL, postgres_reachable

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/{name}"


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database that each test's database is copied from (fast: no migrations)."""
    if not run_sync(postgres_reachable):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    from tests.conftest import migrate

    name = "retrysafe_template_" + uuid.uuid4().hex[:12]
    run_sync(lambda: _admin(f'CREATE DATABASE "{name}"'))
    migrate(POSTGRES_URL.format(name=name))
    try:
        yield name
    finally:
        run_sync(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retrysafe.db'}"
        return
    template: str = request.getfixturevalue("postgres_template")
    name = "retrysafe_test_" + uuid.uuid4().hex[:12]
    run_sync(lambda: _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield POSTGRES_URL.format(name=name)
    finally:
        # The test's servers may still hold pooled connections; FORCE ends them.
        run_sync(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
