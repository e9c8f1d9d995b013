"""Build and check :class:`Settings` from command-line values and ``RETRYSAFE_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from retrysafe.settings import Settings

ENV_PREFIX = "RETRYSAFE_"

DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "postgres"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})
PROVIDER_SCHEMES = frozenset({"http", "https"})
SQLITE_SYNCHRONOUS = ("full", "normal")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the flag and says what to fix."""


@dataclass(frozen=True, slots=True)
class Option:
    """One server option: its ``serve`` flag, its environment variable and its Settings field."""

    flag: str
    """The long flag without dashes, as typed after ``retrysafe serve --``."""

    field: str
    """The :class:`Settings` attribute the value lands in."""

    parse: Callable[[str], Any]
    """Turns the environment variable's text into the field's type."""

    @property
    def env(self) -> str:
        return env_name(self.flag)

    @property
    def label(self) -> str:
        return f"--{self.flag} / {self.env}"


def _optional_str(text: str) -> str | None:
    # An empty variable means "not configured", the way shells clear a setting.
    return text or None


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


SERVER_OPTIONS: tuple[Option, ...] = (
    Option("database", "database_url", str),
    Option("db-pool-size", "db_pool_size", int),
    Option("sqlite-synchronous", "sqlite_synchronous", str),
    Option("redis", "redis_url", _optional_str),
    Option("rate-limit", "rate_limit", str),
    Option("auth-failure-limit", "auth_failure_limit", str),
    Option("idempotency-ttl", "idempotency_ttl", int),
    Option("max-body", "max_body", int),
    Option("max-upload", "max_upload", int),
    Option("max-json-depth", "max_json_depth", int),
    Option("max-header-bytes", "max_header_bytes", int),
    Option("max-query-bytes", "max_query_bytes", int),
    Option("request-timeout", "request_timeout", float),
    Option("max-in-flight", "max_in_flight", int),
    Option("provider-url", "provider_url", _optional_str),
    Option("provider-timeout", "provider_timeout", float),
    Option("document-dir", "document_dir", Path),
    Option("api-log-retention", "api_log_retention", int),
    Option("api-log-bodies", "api_log_bodies", parse_bool),
    Option("api-log-body-limit", "api_log_body_limit", int),
)
"""Every Settings field a flag can set; ``serve`` hands them to worker processes as variables."""

_BY_FIELD = {option.field: option for option in SERVER_OPTIONS}


def env_name(flag: str) -> str:
    """``rate-limit`` → ``RETRYSAFE_RATE_LIMIT``: the variable every flag also reads."""
    return ENV_PREFIX + flag.upper().replace("-", "_")


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
            values[option.field] = option.parse(text.strip())
        except ValueError:
            kinds = {int: "an integer", parse_bool: "true or false"}
            kind = kinds.get(option.parse, "a number")
            raise ConfigError(f"{option.env} must be {kind}, got {text!r}") from None
    return check(replace(Settings(), **values))


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The ``RETRYSAFE_*`` variables that :func:`settings_from_env` turns back into ``settings``."""
    env: dict[str, str] = {}
    for item in fields(settings):
        option = _BY_FIELD.get(item.name)
        if option is None:
            continue
        value = getattr(settings, item.name)
        # None is spelled as an empty variable so it overrides one inherited from the shell.
        env[option.env] = "" if value is None else str(value)
    return env


def check(settings: Settings) -> Settings:
    """Return ``settings`` unchanged when every value is usable, else raise :class:`ConfigError`."""
    check_database_url(settings.database_url)
    if settings.redis_url is not None:
        _check_url(settings.redis_url, REDIS_SCHEMES, _BY_FIELD["redis_url"].label)
    if settings.provider_url is not None:
        _check_url(settings.provider_url, PROVIDER_SCHEMES, _BY_FIELD["provider_url"].label)
    check_rate_limit(settings.rate_limit)
    check_rate_limit(settings.auth_failure_limit, "auth_failure_limit")
    _at_least(settings.db_pool_size, 1, "db_pool_size", "connection")
    if settings.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        label = _BY_FIELD["sqlite_synchronous"].label
        raise ConfigError(f"{label} must be full or normal, got {settings.sqlite_synchronous!r}")
    _at_least(settings.idempotency_ttl, 1, "idempotency_ttl", "second")
    _at_least(settings.max_body, 1, "max_body", "byte")
    _at_least(settings.max_upload, 1, "max_upload", "byte")
    _at_least(settings.max_json_depth, 1, "max_json_depth", "level")
    _at_least(settings.max_header_bytes, 1, "max_header_bytes", "byte")
    _at_least(settings.max_query_bytes, 0, "max_query_bytes", "byte")
    _at_least(settings.max_in_flight, 1, "max_in_flight", "request")
    _at_least(settings.api_log_retention, 0, "api_log_retention", "second")
    _at_least(settings.api_log_body_limit, 1, "api_log_body_limit", "byte")
    if not settings.request_timeout > 0:
        label = _BY_FIELD["request_timeout"].label
        raise ConfigError(f"{label} must be more than 0 seconds, got {settings.request_timeout}")
    if not settings.provider_timeout > 0:
        label = _BY_FIELD["provider_timeout"].label
        raise ConfigError(f"{label} must be more than 0 seconds, got {settings.provider_timeout}")
    return settings


def check_database_url(url: str) -> str:
    """Accept ``sqlite:///path`` and ``postgresql://…`` (optionally with an async driver)."""
    label = _BY_FIELD["database_url"].label
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{label} must be a URL such as sqlite:///./retrysafe.db or "
            f"postgresql://user:password@host/dbname, got {url!r}"
        ) from None
    backend = parsed.drivername.partition("+")[0]
    if backend not in DATABASE_SCHEMES:
        raise ConfigError(
            f"{label} must use sqlite:// or postgresql://, got the {backend!r} scheme"
        )
    return url


def check_rate_limit(text: str, field: str = "rate_limit") -> str:
    """Accept exactly one positive ``limits`` rate such as ``100/second`` or ``5 per minute``."""
    label = _BY_FIELD[field].label
    # Imported here: ``limits`` pulls in its storage backends, which only ``serve`` needs.
    import limits

    try:
        rates = limits.parse_many(text)
    except ValueError:
        rates = []
    if len(rates) != 1 or rates[0].amount < 1:
        raise ConfigError(
            f"{label} must be one rate such as '100/second' or '5000 per hour', got {text!r}"
        )
    return text


def display_url(url: str) -> str:
    """``url`` with any password masked, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _check_url(url: str, schemes: frozenset[str], label: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        wanted = " or ".join(f"{scheme}://" for scheme in sorted(schemes))
        raise ConfigError(f"{label} must be a {wanted} URL, got {url!r}")


def _at_least(value: int, minimum: int, field: str, unit: str) -> None:
    if value < minimum:
        label = _BY_FIELD[field].label
        raise ConfigError(f"{label} must be at least {minimum} {unit}, got {value}")
