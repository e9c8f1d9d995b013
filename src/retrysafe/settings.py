"""The one configuration object of a retrysafe server, built once and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./retrysafe.db"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server; the CLI builds it from flags and ``RETRYSAFE_*`` variables."""

    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy-style URL without a driver: ``sqlite:///path`` or ``postgresql://…``."""

    db_pool_size: int = 10
    """PostgreSQL connections one server process keeps, and the most it opens (no overflow).

    Requests hold one only for their transaction, a few milliseconds, so ten keep a
    process's single core busy; the sum over all processes must stay below the
    server's ``max_connections``. Ignored on SQLite.
    """

    sqlite_synchronous: str = "full"
    """SQLite's ``PRAGMA synchronous`` for the server's writes: ``full`` or ``normal``.

    ``full`` (the default) syncs every commit to disk before the answer is sent, so
    an acknowledged write survives a power cut or an OS crash. ``normal`` skips that
    sync (SQLite then syncs at checkpoints): faster, but a power cut can undo the
    last acknowledged commits, and their retries would execute again. Commits are
    shared by the requests ready at once (group commit), so ``full`` costs one fsync
    per group, not per request. Ignored on PostgreSQL (``synchronous_commit`` stays on).
    """

    redis_url: str | None = None
    """Shared rate-limit storage; ``None`` keeps limits in this process only."""

    rate_limit: str = "100/second"
    """A ``limits`` rate string applied per API key (or client address without one)."""

    auth_failure_limit: str = "60/minute"
    """Failed authentications allowed per client address; past it, 429 until the window ends."""

    idempotency_ttl: int = 24 * 60 * 60
    """Seconds an idempotency record is replayed before the key is new again."""

    max_body: int = 1 * MIB
    """Largest non-multipart request body in bytes; beyond it the answer is 413."""

    max_upload: int = 50 * MIB
    """Largest multipart request body in bytes; beyond it the answer is 413."""

    request_timeout: float = 30.0
    """Server-side deadline of one request in seconds; beyond it the answer is 504."""

    max_in_flight: int = 512
    """Requests served at once by one process; the next one is shed with 503."""

    provider_url: str | None = None
    """Upstream verification provider; ``None`` runs the reference provider in-process."""

    provider_timeout: float = 10.0
    """Seconds one provider call may take; beyond it the verification answers 504."""

    document_dir: Path = field(default_factory=lambda: Path("./retrysafe-documents"))
    """Where uploaded document contents are written."""

    purge_interval: float = 600.0
    """Seconds between background purges of expired idempotency records."""

    max_json_depth: int = 32
    """Deepest nesting a JSON body may have; deeper bodies are rejected with 400."""

    max_header_bytes: int = 16 * 1024
    """Total bytes of a request's header names and values; beyond it 400 ``headers_too_large``."""

    max_query_bytes: int = 8 * 1024
    """Bytes of a request's query string; beyond it 400 ``query_too_long``."""

    api_log_retention: int = 30 * 24 * 60 * 60
    """Seconds an API-log entry is kept; 0 records no API log at all."""

    api_log_bodies: bool = False
    """Whether API-log entries keep the JSON request and response bodies (redacted)."""

    api_log_body_limit: int = 8192
    """Bytes of each body an API-log entry keeps when ``api_log_bodies`` is on."""

    api_log_flush_interval: float = 0.5
    """Seconds between the batched inserts of buffered API-log entries."""
