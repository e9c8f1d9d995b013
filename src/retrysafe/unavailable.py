"""The one error a store raises when its backend cannot be reached: the request did not run.

It lives in a module of its own, importing nothing, so the pipeline and the
memory and Redis stores can name it without loading SQLAlchemy or a driver.
"""

from __future__ import annotations

__all__ = ["StoreUnavailable"]


class StoreUnavailable(Exception):
    """A store's backend could not be reached or stayed locked; nothing ran, nothing was kept.

    The pipeline answers 503 with ``Retry-After``: retrying with the same
    idempotency key is safe. ``dependency`` names the backend (``database``,
    ``redis``) for logs and the ``retrysafe_dependency_errors_total`` metric.
    ``subject`` is what the 503 tells the client is unreachable (``idempotency
    store (redis)``); without it, ``database`` or ``redis store``, after
    ``dependency``. A store may set it on an error passing through it.
    """

    def __init__(self, message: str, *, dependency: str, subject: str | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.subject = subject
