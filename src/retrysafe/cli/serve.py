"""``retrysafe serve``: check the settings, migrate once, then run uvicorn with N processes."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
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
    run_server(settings)


def run_server(settings: Settings) -> None:
    """Serve ``settings``'s app until uvicorn stops: in this process, or in N workers.

    Everything that can refuse to start (the address, the document directory, the
    database) is checked before the banner, so a port in use is one ``retrysafe:
    error:`` line and exit 1 instead of "Application startup complete" and a log
    line; the address comes before the database, so a failed start creates none.
    """
    # Imported late: the web stack is heavy and the admin commands never need it.
    import uvicorn

    from retrysafe.integrations.uvicorn import JoinedWritesProtocol
    from retrysafe.service.workers import ListenError, reserve_port

    host, workers = settings.host, settings.workers
    try:
        sock = (
            listening_socket(host, settings.port)
            if workers == 1
            else reserve_port(host, settings.port)
        )
    except ListenError as exc:
        raise CliError(str(exc)) from None
    try:
        check_document_dir(settings.document_dir)
        # Migrate once here rather than in every worker, so N processes never race Alembic.
        run_with_database(settings.database_url, nothing, announce=False)
        check_idempotency_store(settings.idempotency_store)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]  # --port 0 is a port the system chose
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        # httptools, with a response's head and body sent in one write (integrations/uvicorn.py).
        "http": JoinedWritesProtocol,
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
        from retrysafe.heap import freeze_startup_heap
        from retrysafe.service.app import create_app

        application = create_app(settings)
        freeze_startup_heap()
        server = uvicorn.Server(uvicorn.Config(application, **common))
        with sock:
            server.run(sockets=[sock])
        if not server.started:
            # uvicorn logged why (the app's start-up raised); uvicorn.run would exit 3.
            raise CliError("the server stopped before it started serving; its log says why")
        return
    # Worker processes are started from an import string and cannot be handed a
    # Settings object, so they rebuild it from the same RETRYSAFE_* variables.
    os.environ.update(config.settings_to_env(replace(settings, port=port)))
    # Each worker accepts on its own SO_REUSEPORT socket, so connections are shared evenly.
    from retrysafe.observability.metrics import multiprocess_directory
    from retrysafe.service.workers import run_workers

    # Workers share their metrics through files here, so /metrics reports them all.
    with multiprocess_directory():
        run_workers(
            "retrysafe.service.asgi_entry:create_app_from_env",
            workers=workers,
            reservation=sock,
            **common,
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` for the single-process server, or ListenError.

    Listening at once claims the port before the app starts; connections that
    arrive meanwhile wait in the backlog and are served once it has.
    """
    from retrysafe.service.workers import ListenError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn binds: a restart may reuse the port while old connections linger.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def check_idempotency_store(url: str | None) -> None:
    """Open ``--idempotency-store`` once and close it again, before serving.

    An unreachable store is then one ``retrysafe: error:`` line naming it (password
    masked), not a traceback in the log of a server that never started.
    """
    if url is None:
        return
    import asyncio

    from retrysafe.stores.url import store_from_url
    from retrysafe.unavailable import StoreUnavailable

    async def open_and_close() -> None:
        store = store_from_url(url)
        try:
            await store.start()
        finally:
            await store.aclose()

    try:
        asyncio.run(open_and_close())
    except (StoreUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from None


def check_document_dir(directory: Path) -> None:
    """Create ``--document-dir`` and prove a file can be written there, before serving.

    Otherwise an unwritable directory would surface as a 500 at the first upload.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".retrysafe-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CliError(f"cannot write to --document-dir {directory}: {reason}") from None
