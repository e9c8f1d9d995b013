"""The service suite runs once per database: SQLite, and PostgreSQL when it is reachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import migrate
from tests.support import postgres


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database each test's database is copied from (a copy skips migrating)."""
    with postgres.new_database_sync() as url:
        migrate(url)
        yield url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retrysafe.db'}"
        return
    template: str = request.getfixturevalue("postgres_template")
    with postgres.new_database_sync(template) as url:
        yield url
