"""The import string uvicorn worker processes load: the app built from ``RETRYSAFE_*`` variables."""

from __future__ import annotations

from retrysafe import log_config
from retrysafe.asgi import ASGIApp
from retrysafe.config import settings_from_env
from retrysafe.heap import freeze_startup_heap
from retrysafe.service.app import create_app


def create_app_from_env() -> ASGIApp:
    """uvicorn ``factory=True`` target used by ``retrysafe serve --workers N``."""
    settings = settings_from_env()
    # structlog is configured per process and workers are spawned fresh, so each
    # worker applies the parent's --log-level and --log-format again.
    log_config.configure_structlog(settings.log_level, settings.log_format)
    app = create_app(settings)
    freeze_startup_heap()
    return app
