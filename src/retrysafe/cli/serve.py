"""``retrysafe serve``: check the settings, migrate once, then run uvicorn with N processes."""

from __future__ import annotations

import os
from typing import Any

import typer

from retrysafe import config, log_config
from retrysafe.cli.database import database_source, nothing, run_with_database, shown_database
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.cli.options import takes_settings_flags
from retrysafe.config import ConfigError
from retrysafe.settings import Settings

__all__ = ["serve"]


@takes_settings_flags()
def serve(**values: Any) -> None:
    """Run the API server (uvicorn with uvloop and httptools)."""
    try:
        settings = config.settings_from_values(values)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    # Migrate once here rather than in every worker, so N processes never race Alembic.
    run_with_database(settings.database_url, nothing, announce=False)
    run_server(settings)


def run_server(settings: Settings) -> None:
    """Serve ``settings``'s app until uvicorn stops: in this process, or in N workers."""
    # Imported late: the web stack is heavy and the admin commands never need it.
    import uvicorn

    host, port, workers = settings.host, settings.port, settings.workers
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level.value,
        "log_config": log_config.uvicorn_log_config(settings.log_level, settings.log_format),
        # No "server: uvicorn" header: it tells scanners what to probe and clients nothing.
        "server_header": False,
        # uvicorn's text access line costs ~3 % of a create's CPU and carries neither the
        # Request-Id nor the idempotency outcome; the request log is retrysafe's own.
        "access_log": False,
    }
    plural = "es" if workers > 1 else ""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 needs brackets
    typer.echo(
        f"retrysafe: serving http://{authority} from {shown_database(settings.database_url)}"
        f"{database_source(settings.database_url)} with {workers} process{plural}",
        err=True,
    )
    log_config.configure_structlog(settings.log_level, settings.log_format)
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
