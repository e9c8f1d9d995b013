"""Library rows: retrysafe's pipeline mounted on the anchor's own app, no reference service.

    LIB_STORE=memory|sqlite|redis LIB_STORE_URL=… BENCH_KEY=… PERF_DB=… \
        uvicorn library_app:app --app-dir benchmarks (anchor_sqlite importable on PYTHONPATH)

What a team adding retrysafe to an existing FastAPI app measures: the anchor's
handler unchanged (``anchor_sqlite.app``, imported from the shared anchors, not
copied), wrapped by the public entry point, ``retrysafe.asgi.RetrySafe``, with an
idempotency store of its own. The tenant is RetrySafe's default, the hash of the
presented credential (one key, one tenant: ``BENCH_KEY``); there is no rate
limiter, RetrySafe's default; and structlog is set up as ``retrysafe serve
--log-level warning`` does.
"""

from __future__ import annotations

import os

from anchor_sqlite import app as anchor  # type: ignore[import-not-found]

from retrysafe.asgi import ASGIApp, RetrySafe
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.log_config import configure_structlog

STORES = ("memory", "sqlite", "redis")


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


def mounted(handler: ASGIApp, idempotency_store: IdempotencyStore) -> RetrySafe:
    """``handler`` mounted as a library user mounts it, with RetrySafe's defaults."""
    return RetrySafe(handler, store=idempotency_store)


# As the retrysafe rows run (--log-level warning): unconfigured, structlog would print
# every request line to the console, which no service row pays for.
configure_structlog(os.environ.get("LOG_LEVEL", "warning"))

app = mounted(
    anchor,
    store(os.environ.get("LIB_STORE", "memory"), os.environ.get("LIB_STORE_URL", "")),
)
