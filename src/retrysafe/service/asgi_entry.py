"""The import string uvicorn worker processes load: the app built from ``RETRYSAFE_*`` variables."""

from __future__ import annotations

from retrysafe.asgi import ASGIApp
from retrysafe.config import settings_from_env
from retrysafe.service.app import create_app


def create_app_from_env() -> ASGIApp:
    """uvicorn ``factory=True`` target used by ``retrysafe serve --workers N``."""
    return create_app(settings_from_env())
