"""``retrysafe serve``: check the settings, migrate once, then run uvicorn with N processes."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from retrysafe import config, log_config
from retrysafe.cli.database import nothing, run_with_database
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.cli.options import ApiLogRetentionOption, DatabaseOption, option
from retrysafe.config import ConfigError, display_url, env_name
from retrysafe.settings import DEFAULT_DATABASE_URL, Settings

__all__ = ["serve"]

DEFAULTS = Settings()


class LogLevel(enum.StrEnum):
    """The ``--log-level`` choices, as uvicorn names them, most verbose first."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def serve(
    host: Annotated[str, option("host", "Address to listen on.", metavar="HOST")] = "127.0.0.1",
    port: Annotated[
        int, option("port", "Port to listen on.", metavar="PORT", min=0, max=65535)
    ] = 8000,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    db_pool_size: Annotated[
        int,
        option(
            "db-pool-size",
            "PostgreSQL connections per process (processes x N <= max_connections).",
            metavar="N",
        ),
    ] = DEFAULTS.db_pool_size,
    redis: Annotated[
        str | None,
        option(
            "redis", "Rate-limit storage shared by all processes: redis://host:6379.", metavar="URL"
        ),
    ] = None,
    workers: Annotated[
        int,
        option("workers", "Server processes sharing the port.", metavar="N", min=1),
    ] = 1,
    rate_limit: Annotated[
        str, option("rate-limit", "Per API key, or client address without one.", metavar="RATE")
    ] = DEFAULTS.rate_limit,
    auth_failure_limit: Annotated[
        str,
        option(
            "auth-failure-limit",
            "Failed authentications per client address; past it, 429.",
            metavar="RATE",
        ),
    ] = DEFAULTS.auth_failure_limit,
    idempotency_ttl: Annotated[
        int, option("idempotency-ttl", "How long a key is replayed.", metavar="SECONDS")
    ] = DEFAULTS.idempotency_ttl,
    max_body: Annotated[
        int, option("max-body", "Largest non-multipart body; beyond it 413.", metavar="BYTES")
    ] = DEFAULTS.max_body,
    max_upload: Annotated[
        int, option("max-upload", "Largest multipart body; beyond it 413.", metavar="BYTES")
    ] = DEFAULTS.max_upload,
    max_json_depth: Annotated[
        int, option("max-json-depth", "Deepest JSON nesting; beyond it 400.", metavar="LEVELS")
    ] = DEFAULTS.max_json_depth,
    max_header_bytes: Annotated[
        int, option("max-header-bytes", "All request headers; beyond it 400.", metavar="BYTES")
    ] = DEFAULTS.max_header_bytes,
    max_query_bytes: Annotated[
        int, option("max-query-bytes", "Longest query string; beyond it 400.", metavar="BYTES")
    ] = DEFAULTS.max_query_bytes,
    request_timeout: Annotated[
        float,
        option("request-timeout", "Deadline of one request; beyond it 504.", metavar="SECONDS"),
    ] = DEFAULTS.request_timeout,
    max_in_flight: Annotated[
        int, option("max-in-flight", "Requests at once per process; beyond it 503.", metavar="N")
    ] = DEFAULTS.max_in_flight,
    provider_url: Annotated[
        str | None,
        option(
            "provider-url", "Upstream verification provider (default: in-process).", metavar="URL"
        ),
    ] = None,
    provider_timeout: Annotated[
        float,
        option(
            "provider-timeout", "Deadline of one provider call; beyond it 504.", metavar="SECONDS"
        ),
    ] = DEFAULTS.provider_timeout,
    document_dir: Annotated[
        Path, option("document-dir", "Where uploaded documents are stored.", metavar="DIR")
    ] = DEFAULTS.document_dir,
    log_level: Annotated[
        LogLevel, option("log-level", "Log level of uvicorn and retrysafe.", case_sensitive=False)
    ] = LogLevel.INFO,
    log_format: Annotated[
        log_config.LogFormat,
        option("log-format", "json lines on stdout, or console text.", case_sensitive=False),
    ] = log_config.DEFAULT_FORMAT,
    api_log_retention: ApiLogRetentionOption = DEFAULTS.api_log_retention,
    api_log_bodies: Annotated[
        bool,
        option(
            "api-log-bodies",
            "Keep JSON request and response bodies in the API log (redacted, size-capped).",
        ),
    ] = DEFAULTS.api_log_bodies,
    api_log_body_limit: Annotated[
        int,
        option("api-log-body-limit", "Largest body the API log keeps.", metavar="BYTES"),
    ] = DEFAULTS.api_log_body_limit,
) -> None:
    """Run the API server (uvicorn with uvloop and httptools)."""
    settings = checked(
        Settings(
            database_url=database,
            db_pool_size=db_pool_size,
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
    run_with_database(settings.database_url, nothing)

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


def checked(settings: Settings) -> Settings:
    try:
        return config.check(settings)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
