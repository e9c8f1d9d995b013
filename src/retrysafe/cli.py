"""The ``retrysafe`` command line: serve the API and administer organizations, keys and records."""

from __future__ import annotations

import asyncio
import enum
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from retrysafe import config, log_config
from retrysafe.config import ConfigError, display_url, env_name
from retrysafe.database import Database, DatabaseUnavailable
from retrysafe.database.migrate import MigrationProgress
from retrysafe.service import admin
from retrysafe.service.api_keys import ALL_SCOPES
from retrysafe.settings import DEFAULT_DATABASE_URL, Settings

T = TypeVar("T")

_DEFAULTS = Settings()

USAGE_ERROR = 2
"""Exit status for input the user must fix (bad flag, bad URL, unknown scope)."""

FAILURE = 1
"""Exit status for a valid request that could not be done (unknown key, database down)."""

MAX_ORG_NAME = 200
"""The ``organizations.name`` column's length."""


class CliError(Exception):
    """A valid request that could not be done: one line on stderr, exit status 1."""

    exit_code = FAILURE


class BadInput(CliError):
    """Input the user must fix: one line on stderr, exit status 2, never a traceback."""

    exit_code = USAGE_ERROR


class LogLevel(enum.StrEnum):
    """The ``--log-level`` choices, as uvicorn names them, most verbose first."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


app = typer.Typer(
    name="retrysafe",
    help="retrysafe: an HTTP API that is safe to retry, and the tools to run it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: readable in narrow terminals and in logs, and greppable.
    rich_markup_mode=None,
)
keys_app = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
orgs_app = typer.Typer(help="Manage organizations.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(orgs_app, name="orgs")

# `retrysafe logs tail`, in its own module; it imports this one's plumbing at call time.
from retrysafe.commands.logs import logs_app  # noqa: E402

app.add_typer(logs_app, name="logs")


def _option(flag: str, help: str, **kwargs: Any) -> Any:
    """A ``--flag`` that also reads ``RETRYSAFE_FLAG``, as SPEC §5 asks of every flag."""
    return typer.Option(f"--{flag}", envvar=env_name(flag), help=help, **kwargs)


ApiLogRetentionOption = Annotated[
    int,
    _option(
        "api-log-retention",
        "How long API-log entries are kept (serve: 0 turns the API log off;"
        " purge-expired: 0 deletes none).",
        metavar="SECONDS",
        min=0,
    ),
]

DatabaseOption = Annotated[
    str,
    _option(
        "database",
        "sqlite:///path or postgresql://user:password@host/db; created and migrated when new.",
        metavar="URL",
    ),
]


# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[str, _option("host", "Address to listen on.", metavar="HOST")] = "127.0.0.1",
    port: Annotated[
        int, _option("port", "Port to listen on.", metavar="PORT", min=0, max=65535)
    ] = 8000,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    db_pool_size: Annotated[
        int,
        _option(
            "db-pool-size",
            "PostgreSQL connections per process (processes x N <= max_connections).",
            metavar="N",
        ),
    ] = _DEFAULTS.db_pool_size,
    sqlite_synchronous: Annotated[
        str,
        _option(
            "sqlite-synchronous",
            "full: every acknowledged write survives a power cut; normal: one fsync"
            " fewer per commit, a power cut may undo the last ones.",
            metavar="full|normal",
        ),
    ] = _DEFAULTS.sqlite_synchronous,
    redis: Annotated[
        str | None,
        _option(
            "redis", "Rate-limit storage shared by all processes: redis://host:6379.", metavar="URL"
        ),
    ] = None,
    workers: Annotated[
        int,
        _option("workers", "Server processes sharing the port.", metavar="N", min=1),
    ] = 1,
    rate_limit: Annotated[
        str, _option("rate-limit", "Per API key, or client address without one.", metavar="RATE")
    ] = _DEFAULTS.rate_limit,
    auth_failure_limit: Annotated[
        str,
        _option(
            "auth-failure-limit",
            "Failed authentications per client address; past it, 429.",
            metavar="RATE",
        ),
    ] = _DEFAULTS.auth_failure_limit,
    idempotency_ttl: Annotated[
        int, _option("idempotency-ttl", "How long a key is replayed.", metavar="SECONDS")
    ] = _DEFAULTS.idempotency_ttl,
    max_body: Annotated[
        int, _option("max-body", "Largest non-multipart body; beyond it 413.", metavar="BYTES")
    ] = _DEFAULTS.max_body,
    max_upload: Annotated[
        int, _option("max-upload", "Largest multipart body; beyond it 413.", metavar="BYTES")
    ] = _DEFAULTS.max_upload,
    max_json_depth: Annotated[
        int, _option("max-json-depth", "Deepest JSON nesting; beyond it 400.", metavar="LEVELS")
    ] = _DEFAULTS.max_json_depth,
    max_header_bytes: Annotated[
        int, _option("max-header-bytes", "All request headers; beyond it 400.", metavar="BYTES")
    ] = _DEFAULTS.max_header_bytes,
    max_query_bytes: Annotated[
        int, _option("max-query-bytes", "Longest query string; beyond it 400.", metavar="BYTES")
    ] = _DEFAULTS.max_query_bytes,
    request_timeout: Annotated[
        float,
        _option("request-timeout", "Deadline of one request; beyond it 504.", metavar="SECONDS"),
    ] = _DEFAULTS.request_timeout,
    max_in_flight: Annotated[
        int, _option("max-in-flight", "Requests at once per process; beyond it 503.", metavar="N")
    ] = _DEFAULTS.max_in_flight,
    provider_url: Annotated[
        str | None,
        _option(
            "provider-url", "Upstream verification provider (default: in-process).", metavar="URL"
        ),
    ] = None,
    provider_timeout: Annotated[
        float,
        _option(
            "provider-timeout", "Deadline of one provider call; beyond it 504.", metavar="SECONDS"
        ),
    ] = _DEFAULTS.provider_timeout,
    document_dir: Annotated[
        Path, _option("document-dir", "Where uploaded documents are stored.", metavar="DIR")
    ] = _DEFAULTS.document_dir,
    log_level: Annotated[
        LogLevel, _option("log-level", "Log level of uvicorn and retrysafe.", case_sensitive=False)
    ] = LogLevel.INFO,
    log_format: Annotated[
        log_config.LogFormat,
        _option("log-format", "json lines on stdout, or console text.", case_sensitive=False),
    ] = log_config.DEFAULT_FORMAT,
    api_log_retention: ApiLogRetentionOption = _DEFAULTS.api_log_retention,
    api_log_bodies: Annotated[
        bool,
        _option(
            "api-log-bodies",
            "Keep JSON request and response bodies in the API log (redacted, size-capped).",
        ),
    ] = _DEFAULTS.api_log_bodies,
    api_log_body_limit: Annotated[
        int,
        _option("api-log-body-limit", "Largest body the API log keeps.", metavar="BYTES"),
    ] = _DEFAULTS.api_log_body_limit,
) -> None:
    """Run the API server (uvicorn with uvloop and httptools)."""
    settings = _checked(
        Settings(
            database_url=database,
            db_pool_size=db_pool_size,
            sqlite_synchronous=sqlite_synchronous.lower(),
            redis_url=redis or None,
            rate_limit=rate_limit,
            auth_failure_limit=auth_failure_limit,
            idempotency_ttl=idempotency_ttl,
            max_body=max_body,
            max_upload=max_upload,
            max_json_depth=max_json_depth,
            max_header_bytes=max_header_bytes,
            max_query_bytes=max_query_bytes,
            request_timeout=request_timeout,
            max_in_flight=max_in_flight,
            provider_url=provider_url or None,
            provider_timeout=provider_timeout,
            document_dir=document_dir,
            api_log_retention=api_log_retention,
            api_log_bodies=api_log_bodies,
            api_log_body_limit=api_log_body_limit,
        )
    )
    # Migrate once here rather than in every worker, so N processes never race Alembic.
    _run_with_database(settings.database_url, _nothing)

    # Imported late: the web stack is heavy and the admin commands never need it.
    import uvicorn

    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": log_level.value,
        "log_config": log_config.uvicorn_log_config(log_level.value, log_format.value),
        # No "server: uvicorn" header: it tells scanners what to probe and clients nothing.
        "server_header": False,
        # uvicorn's text access line costs ~3 % of a create's CPU and carries neither the
        # Request-Id nor the idempotency outcome; the request log is retrysafe's own.
        "access_log": False,
    }
    plural = "es" if workers > 1 else ""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 needs brackets
    typer.echo(
        f"retrysafe: serving http://{authority} from {display_url(settings.database_url)} "
        f"with {workers} process{plural}",
        err=True,
    )
    log_config.configure_structlog(log_level.value, log_format.value)
    if workers == 1:
        from retrysafe.service.app import create_app
        from retrysafe.service.heap import freeze_startup_heap

        application = create_app(settings)
        freeze_startup_heap()
        uvicorn.run(application, **common)
        return
    # Worker processes are started from an import string and cannot be handed a
    # Settings object, so they rebuild it from the same RETRYSAFE_* variables.
    os.environ.update(config.settings_to_env(settings))
    os.environ[env_name("log-level")] = log_level.value
    os.environ[env_name("log-format")] = log_format.value
    # Each worker accepts on its own SO_REUSEPORT socket, so connections are shared evenly.
    from retrysafe.observability.metrics import multiprocess_directory
    from retrysafe.service.workers import ListenError, run_workers

    # Workers share their metrics through files here, so /metrics reports them all.
    with multiprocess_directory():
        try:
            run_workers(
                "retrysafe.service.asgi_entry:create_app_from_env", workers=workers, **common
            )
        except ListenError as exc:
            raise CliError(str(exc)) from None


def _provider_option(flag: str, help: str, **kwargs: Any) -> Any:
    # RETRYSAFE_PROVIDER_*: a shell that configures `serve` (RETRYSAFE_PORT…) must not
    # move the provider onto the same port.
    return typer.Option(f"--{flag}", envvar=env_name(f"provider-{flag}"), help=help, **kwargs)


@app.command()
def provider(
    host: Annotated[str, _provider_option("host", "Address to listen on.", metavar="HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, _provider_option("port", "Port to listen on.", metavar="PORT", min=0, max=65535)
    ] = 8001,
    delay: Annotated[
        float,
        _provider_option(
            "delay", "Seconds each check takes before its answer.", metavar="SECONDS", min=0.0
        ),
    ] = 0.0,
    fail_rate: Annotated[
        float,
        _provider_option(
            "fail-rate",
            "Share of requests answered with a failure (500 or a non-JSON body).",
            metavar="0..1",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
) -> None:
    """Run the reference upstream provider; GET /stats answers {"checks_run": N}.

    Checks are kept in memory by Idempotency-Key: a repeated key is answered
    from its record, not run again. Records are lost when the process stops.
    """
    import uvicorn

    from retrysafe.provider.app import create_provider_app
    from retrysafe.provider.upstream import ReferenceProvider

    typer.echo(
        f"retrysafe: provider on http://{host}:{port} (delay {delay:g} s, fail rate {fail_rate:g})",
        err=True,
    )
    uvicorn.run(
        create_provider_app(ReferenceProvider(delay=delay, fail_rate=fail_rate)),
        host=host,
        port=port,
        log_level="warning",
        server_header=False,
        access_log=False,
    )


# --------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    org: Annotated[
        str, typer.Option("--org", metavar="NAME", help="Organization name; created when absent.")
    ],
    scopes: Annotated[
        str | None,
        typer.Option(
            "--scopes",
            metavar="SCOPE,…",
            help=f"Comma-separated, default all: {', '.join(ALL_SCOPES)}.",
        ),
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Create an API key and print its secret as the last line (the only time it is shown)."""
    org = _org_name(org)
    chosen = _parse_scopes(scopes)

    async def create(db: Database) -> tuple[str, bool, str, str]:
        org_id, created = await admin.create_organization(db, org)
        key_id, secret = await admin.create_api_key(db, org, scopes=chosen)
        return org_id, created, key_id, secret

    org_id, created, key_id, secret = _run_with_database(database, create)
    typer.echo(f"{'Created' if created else 'Using'} organization {org} ({org_id})")
    typer.echo(f"Created API key {key_id} with scopes {','.join(chosen)}")
    typer.echo("Secret (shown only now; only its hash is stored):")
    typer.echo(secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id, e.g. key_0123456789abcdef.")],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke an API key; requests that present it get 401 from now on."""

    async def revoke(db: Database) -> bool:
        return await admin.revoke_api_key(db, key_id)

    if not _run_with_database(database, revoke):
        raise CliError(f"no API key with id {key_id!r}")
    typer.echo(f"Revoked API key {key_id}")


def _parse_scopes(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ALL_SCOPES
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in chosen if scope not in ALL_SCOPES]
    if unknown or not chosen:
        problem = f"unknown scope {', '.join(map(repr, unknown))}" if unknown else "no scope given"
        raise BadInput(f"--scopes: {problem}; choose from {','.join(ALL_SCOPES)}")
    return chosen


# --------------------------------------------------------------------------- orgs


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Argument(help="Organization name, unique.")],
    inquiry_quota: Annotated[
        int | None,
        typer.Option(
            "--inquiry-quota",
            metavar="N",
            min=0,
            help="Inquiries the organization may create (default: no limit).",
        ),
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Create an organization; for an existing one, set its inquiry quota when given."""
    name = _org_name(name)

    async def create(db: Database) -> tuple[str, bool]:
        return await admin.create_organization(db, name, inquiry_quota=inquiry_quota)

    org_id, created = _run_with_database(database, create)
    if created:
        quota = "no inquiry quota" if inquiry_quota is None else f"inquiry quota {inquiry_quota}"
        typer.echo(f"Created organization {name} ({org_id}) with {quota}")
    elif inquiry_quota is None:
        typer.echo(f"Organization {name} ({org_id}) already exists; nothing changed")
    else:
        typer.echo(
            f"Organization {name} ({org_id}) already exists; inquiry quota set to {inquiry_quota}"
        )


def _org_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_ORG_NAME:
        raise BadInput(f"the organization name must be 1 to {MAX_ORG_NAME} characters")
    return name


# --------------------------------------------------------------------------- maintenance


@app.command("purge-expired")
def purge_expired(
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    api_log_retention: ApiLogRetentionOption = _DEFAULTS.api_log_retention,
) -> None:
    """Delete expired idempotency records and old API-log entries; print how many."""
    from retrysafe.commands import maintenance
    from retrysafe.commands.progress import bars

    with bars() as progress:

        async def purge(db: Database) -> maintenance.Purged:
            return await maintenance.purge_all(
                db, api_log_retention=api_log_retention, bars=progress
            )

        purged = _run_with_database(database, purge)
    typer.echo(f"Purged {purged.records} expired idempotency record{_s(purged.records)}")
    typer.echo(f"Purged {purged.api_logs} API-log entr{'y' if purged.api_logs == 1 else 'ies'}")


@app.command()
def migrate(database: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """Create the database if needed and bring it to the newest schema."""
    from retrysafe.commands.maintenance import migration_progress
    from retrysafe.commands.progress import bars

    with bars() as progress:
        _run_with_database(database, _nothing, progress=migration_progress(progress))
    typer.echo(f"Database {display_url(database)} is at the newest schema")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


# --------------------------------------------------------------------------- plumbing


async def _nothing(_db: Database) -> None:
    return None


def _checked(settings: Settings) -> Settings:
    try:
        return config.check(settings)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


def _run_with_database(
    url: str,
    work: Callable[[Database], Awaitable[T]],
    *,
    progress: MigrationProgress | None = None,
) -> T:
    """Open ``url``, create and migrate it when new, run ``work`` on it and close it."""
    try:
        config.check_database_url(url)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None

    async def run() -> T:
        from retrysafe.database.migrate import upgrade

        if not url.startswith("sqlite"):
            await _create_postgres_database_if_missing(url)
        db = Database(url)
        try:
            await upgrade(db, progress=progress)
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except ValueError as exc:
        # The admin functions refuse bad names, scopes and quotas with ValueError.
        raise BadInput(str(exc)) from None
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        raise CliError(f"cannot use the database {display_url(url)}: {_reason(exc)}") from None


async def _create_postgres_database_if_missing(url: str) -> None:
    """``CREATE DATABASE`` when the server answers but the database is not there yet.

    SPEC §5 has every command create its database when it is new; SQLite does that
    by opening the file, PostgreSQL needs the statement on a maintenance database.
    """
    import asyncpg

    target = make_url(url).set(drivername="postgresql")
    try:
        try:
            conn = await asyncpg.connect(target.render_as_string(hide_password=False))
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            await conn.close()
            return
        maintenance = target.set(database="postgres").render_as_string(hide_password=False)
        conn = await asyncpg.connect(maintenance)
        try:
            name = str(target.database).replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # another process created it between our two connections
        finally:
            await conn.close()
    except asyncpg.PostgresError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


def _reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's SQL echo and background links."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def main() -> None:
    """Run the command line; our own errors print one line on stderr, never a traceback.

    Flag parsing errors (unknown option, not a number) keep click's usual usage
    message and exit status 2.
    """
    command = typer.main.get_command(app)
    try:
        command.main(prog_name="retrysafe")
    except CliError as exc:
        typer.echo(f"retrysafe: error: {exc}", err=True)
        sys.exit(exc.exit_code)
