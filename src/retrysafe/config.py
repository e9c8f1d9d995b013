"""Build and check :class:`Settings` from its declarations: variables, flag values, the README.

The options themselves are declared once, on the fields of
:class:`retrysafe.settings.Settings`; this module only walks those declarations.
"""

from __future__ import annotations

import enum
import functools
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from retrysafe.settings import OPTION, ConfigError, Option, Settings

__all__ = [
    "ENV_PREFIX",
    "SERVER_OPTIONS",
    "ConfigError",
    "DeclaredOption",
    "check",
    "check_database_url",
    "check_rate_limit",
    "configuration_table",
    "display_url",
    "env_name",
    "parse_bool",
    "settings_from_env",
    "settings_from_values",
    "settings_to_env",
]

ENV_PREFIX = "RETRYSAFE_"


@dataclass(frozen=True, slots=True)
class DeclaredOption:
    """One option as declared on its :class:`Settings` field, with the field's name and type."""

    field: str
    """The :class:`Settings` attribute the value lands in."""

    kind: type
    """The field's type without ``None``: ``int``, ``str``, ``Path``, an enum…"""

    optional: bool
    """``None`` is a value (an unset URL); an empty variable or flag means it."""

    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag

    @property
    def env(self) -> str:
        return self.option.env

    @property
    def label(self) -> str:
        return self.option.label

    def parse(self, text: str) -> Any:
        """The field's value from a variable's text; :class:`ValueError` when it is not one."""
        text = text.strip()
        if self.optional and not text:
            # An empty variable means "not configured", the way shells clear a setting.
            return None
        if self.kind is bool:
            return parse_bool(text)
        if issubclass(self.kind, enum.Enum):
            return self.kind(text.lower())
        convert: Callable[[str], Any] = self.kind  # int, float, str or Path
        return convert(text)

    def describe_kind(self) -> str:
        """What a variable for this option must hold, for the message when it does not."""
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return "an integer"
        if issubclass(self.kind, enum.Enum):
            return "one of " + ", ".join(member.value for member in self.kind)
        return "a number"

    def shown_default(self) -> str:
        """The default as ``--help`` and the README show it."""
        if self.option.shown_default is not None:
            return self.option.shown_default
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def _declared_options() -> tuple[DeclaredOption, ...]:
    hints = typing.get_type_hints(Settings)
    declared = []
    for item in fields(Settings):
        option = item.metadata.get(OPTION)
        if option is None:
            continue
        kind, optional = _without_none(hints[item.name])
        declared.append(DeclaredOption(item.name, kind, optional, item.default, option))
    return tuple(declared)


def _without_none(hint: Any) -> tuple[type, bool]:
    if isinstance(hint, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        [kind] = members  # an option has one type, or one type and None
        return kind, True
    return hint, False


SERVER_OPTIONS: tuple[DeclaredOption, ...] = _declared_options()
"""Every Settings field a flag can set, in declaration order."""

BY_FIELD: Mapping[str, DeclaredOption] = {option.field: option for option in SERVER_OPTIONS}


def env_name(flag: str) -> str:
    """``rate-limit`` → ``RETRYSAFE_RATE_LIMIT``: the variable every flag also reads."""
    return ENV_PREFIX + flag.upper().replace("-", "_")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off) as a variable spells a switch."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``RETRYSAFE_*`` variables over the defaults, checked by :func:`check`.

    This is how ``serve --workers N`` configures its worker processes, which uvicorn
    starts from an import string and so cannot receive a Settings object.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in SERVER_OPTIONS:
        text = environ.get(option.env)
        if text is None:
            continue
        try:
            values[option.field] = option.parse(text)
        except ValueError:
            raise ConfigError(
                f"{option.env} must be {option.describe_kind()}, got {text!r}"
            ) from None
    return check(replace(Settings(), **values))


def settings_from_values(values: Mapping[str, Any]) -> Settings:
    """Settings from values the flag parser already typed (``serve``'s flags), checked."""
    typed: dict[str, Any] = {
        name: None if BY_FIELD[name].optional and value == "" else value
        for name, value in values.items()
    }
    return check(Settings(**typed))


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The ``RETRYSAFE_*`` variables that :func:`settings_from_env` turns back into ``settings``."""
    env: dict[str, str] = {}
    for option in SERVER_OPTIONS:
        value = getattr(settings, option.field)
        # None is spelled as an empty variable so it overrides one inherited from the shell.
        env[option.env] = "" if value is None else str(value)
    return env


def check(settings: Settings) -> Settings:
    """Return ``settings`` unchanged when every value is usable, else raise :class:`ConfigError`."""
    for declared in SERVER_OPTIONS:
        value = getattr(settings, declared.field)
        option = declared.option
        if option.minimum is not None or option.maximum is not None:
            _check_range(value, option)
        if option.rule is not None:
            option.rule(value, option.label)
    return settings


def _check_range(value: float, option: Option) -> None:
    unit = f" {option.unit}" if option.unit else ""
    low, high = option.minimum, option.maximum
    if low is not None and option.above and not value > low:
        raise ConfigError(f"{option.label} must be more than {low:g}{unit}, got {value}")
    if low is not None and not option.above and value < low:
        raise ConfigError(f"{option.label} must be at least {low:g}{unit}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{option.label} must be at most {high:g}{unit}, got {value}")


def _rule(field: str) -> Callable[[Any, str], None]:
    rule = BY_FIELD[field].option.rule
    assert rule is not None, field  # the declarations give these fields a rule
    return rule


def check_database_url(url: str) -> str:
    """Accept ``sqlite:///path`` and ``postgresql://…`` (optionally with an async driver)."""
    _rule("database_url")(url, BY_FIELD["database_url"].label)
    return url


def check_rate_limit(text: str, field: str = "rate_limit") -> str:
    """Accept exactly one positive ``limits`` rate such as ``100/second`` or ``5 per minute``."""
    _rule(field)(text, BY_FIELD[field].label)
    return text


def display_url(url: str) -> str:
    """``url`` with any password masked, for logs and messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@functools.cache
def configuration_table() -> str:
    """The README's configuration table (Markdown), one row per declared option."""
    rows = [
        "| flag | variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for option in SERVER_OPTIONS:
        meaning = option.option.help
        if issubclass(option.kind, enum.Enum):
            meaning += " One of " + ", ".join(f"`{member.value}`" for member in option.kind) + "."
        meaning = meaning.replace("|", "\\|")  # a pipe would end the cell
        # None and off are words, not values to type.
        literal = option.default is not None and not isinstance(option.default, bool)
        default = f"`{option.shown_default()}`" if literal else option.shown_default()
        rows.append(f"| `--{option.flag}` | `{option.env}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"
