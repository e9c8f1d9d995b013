"""The service suite runs once per database: SQLite, and PostgreSQL when it is reachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import migrate
from tests.support import postgres


@pytest.fixture(scope="session")
def postgres_copies() -> Iterator[postgres.Copies]:
    """Copies of a migrated database, one per test (a copy skips migrating), made ahead."""
    with postgres.new_database_sync() as url:
        migrate(url)
        copies = postgres.Copies(url.rsplit("/", 1)[1])
        try:
            yield copies
        finally:
            copies.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retrysafe.db'}"
        return
    copies: postgres.Copies = request.getfixturevalue("postgres_copies")
    name = copies.take()
    try:
        yield postgres.url_of(name)
    finally:
        copies.drop(name)
