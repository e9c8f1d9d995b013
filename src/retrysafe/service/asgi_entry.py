"""The import string uvicorn worker processes load: the app built from ``RETRYSAFE_*`` variables."""

from __future__ import annotations

import os

from retrysafe import log_config
from retrysafe.asgi import ASGIApp
from retrysafe.config import env_name, settings_from_env
from retrysafe.service.app import create_app
from retrysafe.service.heap import freeze_startup_heap


def create_app_from_env() -> ASGIApp:
    """uvicorn ``factory=True`` target used by ``retrysafe serve --workers N``."""
    # structlog is configured per process and workers are spawned fresh, so each
    # worker applies the parent's --log-level and --log-format again.
    log_config.configure_structlog(
        os.environ.get(env_name("log-level"), "info"),
        os.environ.get(env_name("log-format"), log_config.DEFAULT_FORMAT),
    )
    app = create_app(settings_from_env())
    freeze_startup_heap()
    return app
