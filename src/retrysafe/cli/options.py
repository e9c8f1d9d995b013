"""Flags more than one command takes, each reading its ``RETRYSAFE_*`` variable."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retrysafe.config import env_name

__all__ = ["ApiLogRetentionOption", "DatabaseOption", "option"]


def option(flag: str, help: str, **kwargs: Any) -> Any:
    """A ``--flag`` that also reads ``RETRYSAFE_FLAG``, as SPEC §5 asks of every flag."""
    return typer.Option(f"--{flag}", envvar=env_name(flag), help=help, **kwargs)


ApiLogRetentionOption = Annotated[
    int,
    option(
        "api-log-retention",
        "How long API-log entries are kept (serve: 0 turns the API log off;"
        " purge-expired: 0 deletes none).",
        metavar="SECONDS",
        min=0,
    ),
]

DatabaseOption = Annotated[
    str,
    option(
        "database",
        "sqlite:///path or postgresql://user:password@host/db; created and migrated when new.",
        metavar="URL",
    ),
]
