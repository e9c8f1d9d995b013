"""--log-level reaches uvicorn's loggers, the ``retrysafe`` logger and structlog alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from retrysafe.log_config import TRACE, configure_structlog, level_number, uvicorn_log_config


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize(
    ("name", "number"),
    [("trace", TRACE), ("debug", logging.DEBUG), ("info", logging.INFO), ("critical", 50)],
)
def test_level_numbers(name: str, number: int) -> None:
    assert level_number(name) == number


def test_uvicorn_config_adds_the_retrysafe_logger() -> None:
    """The retrysafe logger gets the level and uvicorn's stderr handler."""
    config = uvicorn_log_config("warning")
    assert config["loggers"]["retrysafe"] == {
        "handlers": ["default"],
        "level": logging.WARNING,
        "propagate": False,
    }
    assert "uvicorn.access" in config["loggers"]


def test_uvicorn_config_is_a_copy() -> None:
    """Building one config never changes uvicorn's module-level default."""
    from uvicorn.config import LOGGING_CONFIG

    uvicorn_log_config("debug")
    assert "retrysafe" not in LOGGING_CONFIG["loggers"]


def test_structlog_drops_events_below_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog("warning")
    logger = structlog.get_logger("retrysafe.test")
    logger.info("quiet event")
    logger.warning("loud event")
    out = capsys.readouterr().out
    assert "loud event" in out
    assert "quiet event" not in out


def test_structlog_trace_keeps_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog("trace")
    structlog.get_logger("retrysafe.test").debug("debug event")
    assert "debug event" in capsys.readouterr().out
