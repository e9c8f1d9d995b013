"""Fixtures of the observability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from structlog.typing import EventDict


@pytest.fixture
def captured_logs() -> Iterator[list[EventDict]]:
    """Every structlog event emitted during the test, as dicts."""
    with structlog.testing.capture_logs() as logs:
        yield logs
