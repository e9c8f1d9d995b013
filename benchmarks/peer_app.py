"""Row 7: the peer ``asgi-idempotency-header`` (Redis backend) in front of the baseline handler.

The handler is ``bare_app``'s, unchanged; the peer adds only its idempotency
middleware (no rate limit, no authentication). Its keys live under
``PEER_PREFIX`` in the Redis at ``PEER_REDIS_URL`` so the benchmark can delete
them afterwards. Install the peer with ``pip install -e '.[bench]'`` (or
``pip install asgi-idempotency-header``).
"""

from __future__ import annotations

import os

from bare_app import app  # type: ignore[import-not-found]
from idempotency_header_middleware import IdempotencyHeaderMiddleware
from idempotency_header_middleware.backends import RedisBackend
from redis.asyncio import Redis

_prefix = os.environ.get("PEER_PREFIX", "retrysafe-bench-peer")
_backend = RedisBackend(
    Redis.from_url(os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")),
    keys_key=f"{_prefix}:keys",
    response_key=f"{_prefix}:response:",
)
app.add_middleware(IdempotencyHeaderMiddleware, backend=_backend)
