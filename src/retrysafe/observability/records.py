"""What one request did, as the observation layer saw it, and who may receive it."""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

from retrysafe.asgi import Scope, state

__all__ = [
    "DEPENDENCY_ERROR_STATE_KEY",
    "ApiLogSink",
    "Dependency",
    "RequestRecord",
    "note_dependency_error",
]

Dependency = Literal["database", "redis"]

DEPENDENCY_ERROR_STATE_KEY = "retrysafe.dependency_error"
"""State key a layer or handler sets when a request met an unreachable database or Redis.

Most such failures travel up as exceptions the observation layer classifies by
type; this key is for the ones answered where they happen (FastAPI renders a
handler's ``DatabaseUnavailable`` as a 503 without re-raising it).
"""


def note_dependency_error(scope: Scope, dependency: Dependency) -> None:
    """Mark the request as having met an unreachable ``dependency``; metrics count it."""
    state(scope)[DEPENDENCY_ERROR_STATE_KEY] = dependency


class RequestRecord(NamedTuple):
    """One finished request: the log line and the API-log entry are built from it.

    It never holds a secret: no header but the idempotency key is kept, and the
    bodies are there only when body capture is on (size-capped, redacted later by
    the API-log writer). Immutable like a frozen dataclass, but one is built per
    request and a named tuple is built in a third of a frozen dataclass's time
    (whose ``__init__`` sets each of the 18 fields through ``object.__setattr__``).
    """

    request_id: str
    started_at: float
    """Wall-clock epoch seconds when the request arrived."""
    method: str
    path: str
    query: str
    route: str
    """The route template (``/api/v1/accounts/{account_id}``), ``unmatched`` when none."""
    status: int
    duration_ms: float
    organization_id: str | None
    api_key_id: str | None
    idempotency_key: str | None
    outcome: str | None
    """``executed``, ``replayed``, ``mismatch``, ``in_flight``, ``not_recorded``; ``None``
    for a request that carried no idempotency key (or was not a POST/PATCH)."""
    rate_limit: str | None
    """``allowed`` or ``limited``; ``None`` when the limiter did not count the request."""
    error_code: str | None
    """The first ``code`` of the error envelope of a non-2xx answer."""
    request_body: bytes | None = None
    request_content_type: str | None = None
    response_body: bytes | None = None
    response_content_type: str | None = None


class ApiLogSink(Protocol):
    """Receives the records of API requests; must return at once (it runs on every request)."""

    def submit(self, record: RequestRecord) -> None: ...
