"""One log level and one log format for a server process: uvicorn, ``retrysafe`` and structlog.

``json`` (the default) writes one JSON object per line to stdout, the shape log
shippers ingest without parsing rules; ``console`` writes aligned, coloured text
for a person at a terminal. Both formats apply to structlog events (the request
line, warnings) and to uvicorn's own stdlib log records alike.
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

import structlog
from structlog.typing import Processor

from retrysafe.settings import LogFormat, LogLevel

__all__ = [
    "DEFAULT_FORMAT",
    "TRACE",
    "LogFormat",
    "LogLevel",
    "configure_structlog",
    "json_formatter",
    "level_number",
    "uvicorn_log_config",
]

TRACE = 5
"""uvicorn's level below DEBUG."""

DEFAULT_FORMAT = LogFormat.JSON


def level_number(level: str) -> int:
    """``"info"`` → 20; also knows uvicorn's ``"trace"``."""
    return TRACE if level == "trace" else int(logging.getLevelName(level.upper()))


def _shared_processors() -> list[Processor]:
    """What every event gets before rendering, structlog's own and stdlib records alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(log_format: str) -> Processor:
    if LogFormat(log_format) is LogFormat.JSON:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())


def json_formatter() -> logging.Formatter:
    """A stdlib formatter that renders uvicorn's records as the same JSON lines.

    Named by import string in the dictConfig below, so the config stays picklable
    for uvicorn's worker processes.
    """
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
        ],
    )


def uvicorn_log_config(level: str, log_format: str = DEFAULT_FORMAT) -> dict[str, Any]:
    """uvicorn's dictConfig plus the ``retrysafe`` logger; uvicorn applies it in every worker.

    In JSON format every handler writes JSON lines to stdout, so one stream carries
    the whole process's log; the console format keeps uvicorn's own text.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["retrysafe"] = {
        "handlers": ["default"],
        "level": level_number(level),
        "propagate": False,
    }
    if LogFormat(log_format) is LogFormat.JSON:
        config["formatters"]["json"] = {"()": "retrysafe.log_config.json_formatter"}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
            handler["stream"] = "ext://sys.stdout"
    return config


def configure_structlog(level: str, log_format: str = DEFAULT_FORMAT) -> None:
    """Drop structlog events below ``level`` and render the rest in ``log_format`` to stdout."""
    # structlog's filtering loggers exist for the standard levels only; trace means all.
    minimum = max(level_number(level), logging.DEBUG)
    processors = [*_shared_processors()]
    if LogFormat(log_format) is LogFormat.JSON:
        # Tracebacks as one string field: a multi-line traceback would break JSON lines.
        processors.append(structlog.processors.format_exc_info)
    processors.append(_renderer(log_format))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(minimum),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
