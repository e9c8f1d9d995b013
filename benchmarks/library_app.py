"""Library rows: retrysafe's pipeline mounted on the anchor's own app, no reference service.

    LIB_STORE=memory|sqlite|redis LIB_STORE_URL=… BENCH_KEY=… PERF_DB=… \
        uvicorn library_app:app --app-dir benchmarks (anchor_sqlite importable on PYTHONPATH)

What a team adding retrysafe to an existing FastAPI app measures: the anchor's
handler unchanged (``anchor_sqlite.app``, imported from the shared anchors, not
copied), wrapped in the pipeline with an idempotency store of its own. The
tenant is the presented key (one key, one tenant: ``BENCH_KEY``), the rate
limiter gets a limit it never reaches, since there is no way yet to leave it
out, and structlog is set up as ``retrysafe serve --log-level warning`` does.

This is the one module to switch when the public entry point (issue 13,
``retrysafe.asgi``) lands: :func:`mounted` composes with what exists today.
"""

from __future__ import annotations

import os

from anchor_sqlite import app as anchor  # type: ignore[import-not-found]

from retrysafe.asgi import ASGIApp
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.log_config import configure_structlog
from retrysafe.pipeline import build_pipeline
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.settings import Settings

STORES = ("memory", "sqlite", "redis")
PRINCIPAL = Principal("org_bench", "key_bench", frozenset())


def store(kind: str, url: str) -> IdempotencyStore:
    """The idempotency store of one library row; ``url`` is its database or Redis."""
    if kind == "memory":
        from retrysafe.stores.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore()
    if kind == "sqlite":
        from retrysafe.database import Database
        from retrysafe.stores.sql import SqlIdempotencyStore

        return SqlIdempotencyStore(Database(url))
    if kind == "redis":
        from redis.asyncio import Redis

        from retrysafe.stores.redis import RedisIdempotencyStore

        return RedisIdempotencyStore(
            Redis.from_url(url), prefix=os.environ.get("LIB_PREFIX", "rs-bench-lib:")
        )
    raise ValueError(f"LIB_STORE must be one of {', '.join(STORES)}, not {kind!r}")


def mounted(handler: ASGIApp, idempotency_store: IdempotencyStore, api_key: str) -> ASGIApp:
    """``handler`` inside the pipeline, authenticated by the one ``api_key``."""

    async def authenticate(secret: str) -> Principal | None:
        return PRINCIPAL if secret == api_key else None

    return build_pipeline(
        handler,
        settings=Settings(),
        authenticator=authenticate,
        idempotency_store=idempotency_store,
        rate_limiter=RateLimiter.from_settings("1000000/second"),
    )


# As the retrysafe rows run (--log-level warning): unconfigured, structlog would print
# every request line to the console, which no service row pays for.
configure_structlog(os.environ.get("LOG_LEVEL", "warning"))

app = mounted(
    anchor,
    store(os.environ.get("LIB_STORE", "memory"), os.environ.get("LIB_STORE_URL", "")),
    os.environ.get("BENCH_KEY", "bench-key"),
)
