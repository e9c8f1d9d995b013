"""Fixtures the library's tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.support import postgres


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a throwaway PostgreSQL database, dropped afterwards."""
    if not await postgres.reachable():
        pytest.skip(postgres.SKIP_REASON)
    name = await postgres.create_database()
    try:
        yield postgres.url_of(name)
    finally:
        await postgres.drop_database(name)
