"""The one configuration object of a retrysafe server, and the one declaration of each option.

Every field a flag can set carries its :class:`Option` (flag, help, the rule a
value must meet) next to its type and default; nothing else names an option.
From these declarations ``retrysafe.config`` derives the ``RETRYSAFE_*`` parsing,
the checks and the hand-off to ``serve --workers N`` processes, and
``retrysafe.cli`` derives the ``serve`` flags; the README's configuration table is
generated from them too. Adding an option is one field here plus its use.

This module imports nothing beyond the standard library (the URL and rate rules
import their parsers when they run), so the pipeline can take a ``Settings``
without loading SQLAlchemy or ``limits``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MIB",
    "OPTION",
    "ConfigError",
    "LogFormat",
    "LogLevel",
    "Option",
    "Settings",
    "SqliteSynchronous",
]

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite:///./retrysafe.db"
MIB = 1024 * 1024

OPTION = "retrysafe.option"
"""The key of a field's :class:`Option` in its dataclass metadata."""

DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "postgres"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})
PROVIDER_SCHEMES = frozenset({"http", "https"})
STORE_SCHEMES = DATABASE_SCHEMES | frozenset({"memory", "redis", "rediss", "unix"})
"""What ``--idempotency-store`` accepts: the schemes ``retrysafe.stores.url`` builds."""


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the flag and says what to fix."""


class LogLevel(enum.StrEnum):
    """The ``--log-level`` choices, as uvicorn names them, most verbose first."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class SqliteSynchronous(enum.StrEnum):
    """The ``--sqlite-synchronous`` choices: SQLite's ``PRAGMA synchronous`` levels we allow."""

    FULL = "full"
    NORMAL = "normal"


class LogFormat(enum.StrEnum):
    """The ``--log-format`` choices."""

    JSON = "json"
    CONSOLE = "console"


Rule = Callable[[Any, str], None]
"""A check beyond a range: ``rule(value, label)`` raises :class:`ConfigError` naming ``label``."""


@dataclass(frozen=True, slots=True)
class Option:
    """How one :class:`Settings` field is set from outside, and what a usable value is."""

    flag: str
    """The long flag without dashes (``rate-limit``); the variable is ``RETRYSAFE_RATE_LIMIT``."""

    help: str
    """One sentence for ``--help`` and the README's table."""

    metavar: str | None = None
    """The placeholder ``--help`` shows after the flag (``BYTES``, ``URL``)."""

    minimum: float | None = None
    """The smallest usable value (or, with ``above``, the value it must exceed)."""

    maximum: float | None = None
    """The largest usable value."""

    above: bool = False
    """``minimum`` itself is refused: the value must be more than it (timeouts)."""

    unit: str = ""
    """The word the range message uses: ``must be at least 1 byte``."""

    rule: Rule | None = None
    """A check the range cannot express: a URL's scheme, a rate's syntax."""

    shown_default: str | None = None
    """How ``--help`` and the README show the default, where its value would mislead."""

    range_checked_by_parser: bool = False
    """The flag parser refuses an out-of-range flag with its usage message (exit 2).

    Kept for the options whose range click has always checked (``--port``,
    ``--workers``, ``--api-log-retention``), so their messages stay as they were;
    :func:`retrysafe.config.check` checks every range either way.
    """

    @property
    def env(self) -> str:
        """The environment variable that stands in for the flag."""
        return "RETRYSAFE_" + self.flag.upper().replace("-", "_")

    @property
    def label(self) -> str:
        """How messages name the option: ``--max-body / RETRYSAFE_MAX_BODY``."""
        return f"--{self.flag} / {self.env}"


def option(default: T, flag: str, help: str, **rules: Any) -> T:
    """A :class:`Settings` field with ``default`` that the ``--flag`` and its variable set."""
    # Field objects are what dataclass defaults look like to mypy, so the field keeps its type.
    declared: T = field(default=default, metadata={OPTION: Option(flag, help, **rules)})
    return declared


def _database_url(url: str, label: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

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


def _url_with_scheme(schemes: frozenset[str]) -> Rule:
    def url_rule(url: str | None, label: str) -> None:
        if url is None:
            return
        parts = urlsplit(url)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            wanted = " or ".join(f"{scheme}://" for scheme in sorted(schemes))
            raise ConfigError(f"{label} must be a {wanted} URL, got {url!r}")

    return url_rule


def _store_url(url: str | None, label: str) -> None:
    if url is None:
        return
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in STORE_SCHEMES:
        raise ConfigError(
            f"{label} must be a memory://, sqlite:///path, postgresql://… or redis://… URL,"
            f" got {url!r}"
        )


def _one_rate(text: str, label: str) -> None:
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server; the CLI builds it from flags and ``RETRYSAFE_*`` variables."""

    host: str = option("127.0.0.1", "host", "Address to listen on.", metavar="HOST")

    port: int = option(
        8000,
        "port",
        "Port to listen on.",
        metavar="PORT",
        minimum=0,
        maximum=65535,
        range_checked_by_parser=True,
    )

    database_url: str = option(
        DEFAULT_DATABASE_URL,
        "database",
        "sqlite:///path or postgresql://user:password@host/db; created and migrated when new.",
        metavar="URL",
        rule=_database_url,
    )
    """SQLAlchemy-style URL without a driver: ``sqlite:///path`` or ``postgresql://…``."""

    redis_url: str | None = option(
        None,
        "redis",
        "Rate-limit storage shared by all processes: redis://host:6379"
        " (without it, limits are per process).",
        metavar="URL",
        rule=_url_with_scheme(REDIS_SCHEMES),
        shown_default="none",
    )
    """Shared rate-limit storage; ``None`` keeps limits in this process only."""

    idempotency_store: str | None = option(
        None,
        "idempotency-store",
        "Where idempotency records live: redis://host:6379/0, postgresql://…, sqlite:///path"
        " or memory://. Only the default keeps them in the handlers' own transaction.",
        metavar="URL",
        rule=_store_url,
        shown_default="the database",
    )
    """A store URL for the records; ``None`` keeps them in the service database (the default)."""

    workers: int = option(
        1,
        "workers",
        "Server processes sharing the port.",
        metavar="N",
        minimum=1,
        unit="process",
        range_checked_by_parser=True,
    )
    """Processes ``serve`` runs; each rebuilds these settings from ``RETRYSAFE_*`` variables."""

    rate_limit: str = option(
        "100/second",
        "rate-limit",
        "One rate per API key, or per client address without one, e.g. '5000 per hour'.",
        metavar="RATE",
        rule=_one_rate,
    )
    """A ``limits`` rate string applied per API key (or client address without one)."""

    idempotency_ttl: int = option(
        24 * 60 * 60,
        "idempotency-ttl",
        "Seconds a key is replayed.",
        metavar="SECONDS",
        minimum=1,
        unit="second",
    )
    """Seconds an idempotency record is replayed before the key is new again."""

    max_body: int = option(
        1 * MIB,
        "max-body",
        "Largest non-multipart body in bytes; beyond it 413.",
        metavar="BYTES",
        minimum=1,
        unit="byte",
    )

    max_upload: int = option(
        50 * MIB,
        "max-upload",
        "Largest multipart body in bytes; beyond it 413.",
        metavar="BYTES",
        minimum=1,
        unit="byte",
    )

    request_timeout: float = option(
        30.0,
        "request-timeout",
        "Server-side deadline of one request in seconds; beyond it 504.",
        metavar="SECONDS",
        minimum=0,
        above=True,
        unit="seconds",
    )

    max_in_flight: int = option(
        512,
        "max-in-flight",
        "Requests served at once per process; beyond it 503.",
        metavar="N",
        minimum=1,
        unit="request",
    )

    auth_failure_limit: str = option(
        "60/minute",
        "auth-failure-limit",
        "Failed authentications per client address; past it, 429.",
        metavar="RATE",
        rule=_one_rate,
    )
    """Failed authentications allowed per client address; past it, 429 until the window ends."""

    max_json_depth: int = option(
        32,
        "max-json-depth",
        "Deepest JSON nesting; beyond it 400 invalid_json.",
        metavar="LEVELS",
        minimum=1,
        unit="level",
    )

    max_header_bytes: int = option(
        16 * 1024,
        "max-header-bytes",
        "All request header names and values together, in bytes; beyond it 400 headers_too_large.",
        metavar="BYTES",
        minimum=1,
        unit="byte",
    )

    max_query_bytes: int = option(
        8 * 1024,
        "max-query-bytes",
        "Longest query string in bytes; beyond it 400 query_too_long.",
        metavar="BYTES",
        minimum=0,
        unit="byte",
    )

    provider_url: str | None = option(
        None,
        "provider-url",
        "Upstream verification provider (retrysafe provider); without it the same"
        " provider runs in-process.",
        metavar="URL",
        rule=_url_with_scheme(PROVIDER_SCHEMES),
        shown_default="in-process",
    )

    provider_timeout: float = option(
        10.0,
        "provider-timeout",
        "Seconds one provider call may take; beyond it the verification answers 504.",
        metavar="SECONDS",
        minimum=0,
        above=True,
        unit="seconds",
    )

    db_pool_size: int = option(
        10,
        "db-pool-size",
        "PostgreSQL connections per process, never more (processes x N <= max_connections;"
        " ignored on SQLite); an exhausted pool is a 503.",
        metavar="N",
        minimum=1,
        unit="connection",
    )
    """PostgreSQL connections one server process keeps, and the most it opens (no overflow).

    Requests hold one only for their transaction, a few milliseconds, so ten keep a
    process's single core busy; the sum over all processes must stay below the
    server's ``max_connections``. Ignored on SQLite.
    """

    sqlite_synchronous: SqliteSynchronous = option(  # noqa: RUF009
        SqliteSynchronous.FULL,
        "sqlite-synchronous",
        "full: every acknowledged write survives a power cut; normal: one fsync fewer"
        " per commit, a power cut may undo the last ones (ignored on PostgreSQL).",
    )
    """SQLite's ``PRAGMA synchronous`` for the server's writes: ``full`` or ``normal``.

    ``full`` syncs every commit to disk before the answer is sent, so an acknowledged
    write survives a power cut or an OS crash. ``normal`` skips that sync (SQLite then
    syncs at checkpoints): a power cut can undo the last acknowledged commits, whose
    retries would then execute again. Commits are shared by the requests ready at once
    (group commit), so ``full`` costs one fsync per group, not per request.
    PostgreSQL keeps ``synchronous_commit`` on either way.
    """

    # option() returns a dataclasses.field; ruff cannot tell Path and enum defaults are immutable.
    document_dir: Path = option(  # noqa: RUF009
        Path("./retrysafe-documents"),
        "document-dir",
        "Where uploaded documents are stored.",
        metavar="DIR",
        shown_default="./retrysafe-documents",
    )

    log_level: LogLevel = option(  # noqa: RUF009
        LogLevel.INFO, "log-level", "Log level of uvicorn and retrysafe."
    )

    log_format: LogFormat = option(  # noqa: RUF009
        LogFormat.JSON, "log-format", "json lines on stdout, or console text."
    )

    api_log_retention: int = option(
        30 * 24 * 60 * 60,
        "api-log-retention",
        "How long API-log entries are kept, in seconds (serve: 0 turns the API log off;"
        " purge-expired: 0 deletes none).",
        metavar="SECONDS",
        minimum=0,
        unit="second",
        range_checked_by_parser=True,
    )
    """Seconds an API-log entry is kept; 0 records no API log at all."""

    api_log_bodies: bool = option(
        False,
        "api-log-bodies",
        "Keep JSON request and response bodies in the API log (redacted, size-capped).",
        shown_default="off",
    )

    api_log_body_limit: int = option(
        8192,
        "api-log-body-limit",
        "Largest body the API log keeps, in bytes.",
        metavar="BYTES",
        minimum=1,
        unit="byte",
    )

    # Not options: intervals of background work, set by tests that cannot wait.

    purge_interval: float = 600.0
    """Seconds between background purges of expired idempotency records."""

    api_log_flush_interval: float = 0.5
    """Seconds between the batched inserts of buffered API-log entries."""
