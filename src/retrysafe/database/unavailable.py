"""The database's own "unavailable" error: the request did not run, answer 503."""

from __future__ import annotations

from retrysafe.unavailable import StoreUnavailable

__all__ = ["DatabaseUnavailable"]


class DatabaseUnavailable(StoreUnavailable):
    """The database could not be reached or stayed locked; the request did not run (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, dependency="database")
