"""One log level for a server process: uvicorn's loggers, the ``retrysafe`` logger and structlog."""

from __future__ import annotations

import copy
import logging
from typing import Any

import structlog

TRACE = 5
"""uvicorn's level below DEBUG."""


def level_number(level: str) -> int:
    """``"info"`` → 20; also knows uvicorn's ``"trace"``."""
    return TRACE if level == "trace" else int(logging.getLevelName(level.upper()))


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's dictConfig plus the ``retrysafe`` logger; uvicorn applies it in every worker."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["retrysafe"] = {
        "handlers": ["default"],
        "level": level_number(level),
        "propagate": False,
    }
    return config


def configure_structlog(level: str) -> None:
    """Drop structlog events below ``level``; rendering stays structlog's default."""
    # structlog's filtering loggers exist for the standard levels only; trace means all.
    minimum = max(level_number(level), logging.DEBUG)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(minimum))
