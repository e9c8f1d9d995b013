"""The service suite runs once per database: SQLite, and PostgreSQL when it is reachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import migrate, run_sync
from tests.support import postgres


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database each test's database is copied from (a copy skips migrating)."""
    if not run_sync(postgres.reachable):
        pytest.skip(postgres.SKIP_REASON)
    name = run_sync(postgres.create_database)
    migrate(postgres.url_of(name))
    try:
        yield name
    finally:
        run_sync(lambda: postgres.drop_database(name))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retrysafe.db'}"
        return
    template: str = request.getfixturevalue("postgres_template")
    name = run_sync(lambda: postgres.create_database(template))
    try:
        yield postgres.url_of(name)
    finally:
        run_sync(lambda: postgres.drop_database(name))
