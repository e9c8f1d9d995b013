"""Peer rows: another Python idempotency package in front of the anchor's handler, unchanged.

    PEER=NAME PERF_DB=… PEER_REDIS_URL=… PEER_PREFIX=… \
        uvicorn peer_app:app --app-dir benchmarks (anchor_sqlite importable on PYTHONPATH)

Each peer is wired the way its README shows, around ``anchor_sqlite.app`` (imported
from the shared anchors, not copied), with its Redis backend where it has one;
its keys live under ``PEER_PREFIX`` so the benchmark can delete them afterwards.
Install them with ``pip install -e '.[bench]'``. The peers do less than
retrysafe (see docs/benchmarks.md): no rate limit, no authentication, and none
keeps its record in the handler's transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from anchor_sqlite import app  # type: ignore[import-not-found]

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("PEER_PREFIX", "retrysafe-bench-peer")


def asgi_idempotency_header() -> None:
    """asgi-idempotency-header 0.2.0, its Redis backend."""
    from idempotency_header_middleware import IdempotencyHeaderMiddleware
    from idempotency_header_middleware.backends import RedisBackend
    from redis.asyncio import Redis

    backend = RedisBackend(
        Redis.from_url(REDIS_URL),
        keys_key=f"{PREFIX}:keys",
        response_key=f"{PREFIX}:response:",
    )
    app.add_middleware(IdempotencyHeaderMiddleware, backend=backend)


def fastapi_idempotency_key() -> None:
    """fastapi-idempotency-key 0.1.1, its Redis backend (Lua lock and store)."""
    from fastapi_idempotency_key.backends.redis import RedisBackend
    from fastapi_idempotency_key.middleware import IdempotencyMiddleware

    backend = RedisBackend(redis_url=REDIS_URL, prefix=f"{PREFIX}:")
    app.add_middleware(IdempotencyMiddleware, backend=backend)


def fastapi_idempotency() -> None:
    """fastapi-idempotency 0.1.1, its in-memory store (its only other store needs Tortoise ORM)."""
    from fastapi_idempotency import IdempotencyMiddleware, MemoryStore

    app.add_middleware(IdempotencyMiddleware, store=MemoryStore())


PEERS: dict[str, Callable[[], None]] = {
    "asgi-idempotency-header": asgi_idempotency_header,
    "fastapi-idempotency-key": fastapi_idempotency_key,
    "fastapi-idempotency": fastapi_idempotency,
}

PEERS[os.environ.get("PEER", "asgi-idempotency-header")]()
