"""Flags derived from the option declarations on :class:`~retrysafe.settings.Settings`."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer

from retrysafe.config import BY_FIELD, SERVER_OPTIONS

__all__ = ["ApiLogRetentionOption", "DatabaseOption", "settings_option", "takes_settings_flags"]

F = TypeVar("F", bound=Callable[..., Any])


def settings_option(field: str) -> Any:
    """The ``typer.Option`` of the Settings field ``field``, for ``Annotated[type, …]``.

    Every flag also reads its ``RETRYSAFE_*`` variable (SPEC §5) and shows its
    default in ``--help``.
    """
    declared = BY_FIELD[field]
    option = declared.option
    settings: dict[str, Any] = {"envvar": option.env, "help": option.help}
    if option.metavar is not None:
        settings["metavar"] = option.metavar
    if option.range_checked_by_parser:
        settings.update(min=option.minimum, max=option.maximum)
    if issubclass(declared.kind, enum.Enum):
        settings["case_sensitive"] = False
    if option.shown_default is not None and declared.default is not None:
        settings["show_default"] = option.shown_default
    return typer.Option(f"--{option.flag}", **settings)


def _annotation(field: str) -> Any:
    declared = BY_FIELD[field]
    kind: Any = declared.kind | None if declared.optional else declared.kind
    return Annotated[kind, settings_option(field)]


def takes_settings_flags(fields: Sequence[str] | None = None) -> Callable[[F], F]:
    """Give a command one flag per Settings field (all of them by default), by keyword.

    The command is written ``def command(**values: Any)``; typer reads the
    parameters from the signature set here, so the declarations stay the only
    list of options.
    """
    names = [option.field for option in SERVER_OPTIONS] if fields is None else list(fields)

    def decorate(command: F) -> F:
        parameters = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=BY_FIELD[name].default,
                annotation=_annotation(name),
            )
            for name in names
        ]
        # typer (through inspect.signature) honours __signature__ over the real one.
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return command

    return decorate


DatabaseOption = Annotated[str, settings_option("database_url")]
"""``--database URL``, which every command takes (SPEC §5)."""

ApiLogRetentionOption = Annotated[int, settings_option("api_log_retention")]
"""``--api-log-retention SECONDS``, which ``serve`` and ``purge-expired`` take."""
