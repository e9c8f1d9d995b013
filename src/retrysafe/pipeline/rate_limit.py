"""Rate limiting per presented API key (hashed) or client address, with RateLimit-* headers.

When the shared storage (Redis) stops answering, limits degrade to counters in
this process at the same rate instead of failing requests: a rate limiter is a
safety valve, and refusing all traffic because the valve's bookkeeping is down
would turn a Redis outage into an API outage. The price, while Redis is down,
is that N processes together admit up to N times the rate. One warning marks
the start of an outage and one its end; Redis is asked again at most once per
``probe_interval``, so requests meanwhile pay nothing for the dead connection.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.envelope_layer import ERROR_HEADERS_STATE_KEY

# redis-py is the redis extra's, not the library's: the pipeline runs without it, and
# the Redis storage (the only user of what follows) can then never be opened.
if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool
    from redis.commands.core import AsyncScript
try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - exercised by tests/library/test_packaging.py

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands in for redis-py's error, which nothing can raise without redis-py."""


__all__ = [
    "RATE_LIMIT_STATE_KEY",
    "ProcessCounters",
    "RateLimitLayer",
    "RateLimitState",
    "RateLimiter",
    "async_storage_url",
]

DEFAULT_STORAGE_URL = "memory://"

PROBE_INTERVAL = 1.0
"""Seconds between attempts to reach the shared storage again while it is down."""

REDIS_CONNECT_TIMEOUT = 0.25
"""Seconds to connect to Redis; short, since a request waits for it before degrading."""

REDIS_COMMAND_TIMEOUT = 0.5
"""Seconds one counter update may take; a healthy Redis answers in well under a millisecond."""

logger = structlog.get_logger("retrysafe.rate_limit")

_POLICY_NAME = "default"

RATE_LIMIT_STATE_KEY = "retrysafe.rate_limit"
"""State key holding the request's :class:`RateLimitState`; the observation layer logs it."""


_INCR_WITH_TTL = """
local current = redis.call("incrby", KEYS[1], 1)
if current == 1 then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("pttl", KEYS[1])}
"""
"""limits' own incr_expire.lua, answering the window's remaining time in the same round trip."""

SWEEP_INTERVAL = 10.0
"""Seconds between sweeps of expired windows out of :class:`ProcessCounters`."""


class ProcessCounters(MemoryStorage):
    """limits' in-memory storage, plus a synchronous fixed-window hit for this process.

    ``MemoryStorage.incr`` and ``get_expiry`` are coroutines behind an error
    wrapper, an ``asyncio.Lock`` per key and three clock reads: 3.2 µs a request
    for the two calls a hit needs. A process's own counters need none of that on
    one event loop, so :meth:`hit_window` does the same arithmetic on the same
    dicts in one call (0.5 µs): ``limits``' strategies and the async methods see
    the same counts. It sweeps expired windows out itself, since the storage's
    own expiry task is started only by its async methods.
    """

    def __init__(self) -> None:
        super().__init__(wrap_exceptions=True)
        self._next_sweep = 0.0

    def hit_window(self, key: str, expiry: int) -> tuple[int, float, float]:
        """Count one hit on ``key``: the count after it, when its window ends, and now."""
        now = time.time()
        ends = self.expirations.get(key, 0.0)
        if ends > now:
            count = self.storage[key] + 1
        else:  # a new window, as incr starts one: the old count is gone
            count = 1
            ends = self.expirations[key] = now + expiry
            if now >= self._next_sweep:
                self._sweep(now)
        self.storage[key] = count
        return count, ends, now

    def _sweep(self, now: float) -> None:
        for key in [key for key, ends in self.expirations.items() if ends <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)
        self._next_sweep = now + SWEEP_INTERVAL


class RateLimitState(NamedTuple):
    """The outcome of one hit: whether it was allowed and what the headers report."""

    allowed: bool
    remaining: int
    reset_after: int
    """Whole seconds until the window resets (rounded up, never negative)."""


class RateLimiter:
    """One rate (``100/second``) applied per identifier, counted in a ``limits`` async storage.

    Strategy: **fixed window**. A hit is one atomic increment (``INCR`` + ``EXPIRE``
    in one script on Redis, a counter in memory) and the window's expiry is one
    more read, which is exactly what the headers need: the count after the
    increment gives ``RateLimit-Remaining`` and the expiry gives
    ``RateLimit-Reset``. A moving window keeps one entry per hit (a list per key,
    O(limit) memory and work per request) for a smoother edge, which an API rate
    of this kind does not need; the known cost of a fixed window, up to twice the
    rate across a window boundary, is accepted.

    The hot path talks to the storage directly instead of through
    :class:`FixedWindowRateLimiter`, whose ``hit`` returns only a bool and would
    need a third round trip (``get_window_stats``) for the headers. Keys are the
    ones that strategy builds (:meth:`RateLimitItem.key_for`), so :attr:`strategy`
    reads and clears the same counters.
    """

    def __init__(
        self,
        item: RateLimitItem,
        storage: Storage,
        *,
        probe_interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        connection_pool: ConnectionPool | None = None,
    ) -> None:
        if item.amount < 1:
            raise ValueError(f"A rate limit must allow at least one request, got {item!r}.")
        self.item = item
        self.storage = storage
        self.fallback = ProcessCounters()
        """Per-process counters used while :attr:`storage` cannot be reached."""
        self.probe_interval = probe_interval
        self._clock = clock
        self._outage_since: float | None = None
        self._next_probe = 0.0
        self._pool = connection_pool
        self.on_storage_error: Callable[[], None] | None = None
        """Called on each failed call to the shared storage; the service counts them."""
        self.strategy = FixedWindowRateLimiter(storage)
        self._incr_with_ttl = _window_script(storage)
        self._expiry = item.get_expiry()
        # item.key_for(identifier), precomputed around the identifier: it runs per request.
        self._key_prefix = f"{item.namespace}/"
        self._key_suffix = f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}"
        self.limit_header = str(item.amount).encode()
        self.policy_header = f'"{_POLICY_NAME}";q={item.amount};w={self._expiry}'.encode()

    @classmethod
    def from_settings(cls, rate: str, storage_url: str | None = None) -> RateLimiter:
        """Parse ``rate`` once and open the storage at ``storage_url`` (``memory://`` if None).

        Raises :class:`ValueError` with a message fit for the command line when
        either is invalid.
        """
        try:
            items = parse_many(rate)
        except ValueError:
            raise ValueError(
                f"Invalid rate limit {rate!r}: expected one rate such as '100/second'"
                " or '1000 per 10 minutes'."
            ) from None
        if len(items) != 1:
            raise ValueError(f"Invalid rate limit {rate!r}: give exactly one rate, not several.")
        url = async_storage_url(storage_url or DEFAULT_STORAGE_URL)
        if url == "async+" + DEFAULT_STORAGE_URL:
            return cls(items[0], ProcessCounters())
        try:
            pool = _redis_pool(url)
        except ValueError as exc:
            raise ValueError(f"Invalid rate-limit storage URL {storage_url!r}: {exc}") from None
        options: dict[str, Any] = {}
        if pool is not None:
            options = {"implementation": "redispy", "connection_pool": pool}
        try:
            # wrap_exceptions: every backend failure arrives as one StorageError type.
            storage = storage_from_string(url, wrap_exceptions=True, **options)
        except ConfigurationError as exc:
            raise ValueError(f"Invalid rate-limit storage URL {storage_url!r}: {exc}") from None
        if not isinstance(storage, Storage):
            raise ValueError(f"Rate-limit storage URL {storage_url!r} has no async backend.")
        return cls(items[0], storage, connection_pool=pool)

    def key_for(self, identifier: str) -> str:
        return self._key_prefix + identifier + self._key_suffix

    async def aclose(self) -> None:
        """Close the connections of the storage's Redis pool, if this limiter opened one."""
        if self._pool is not None:
            await self._pool.aclose()

    @property
    def degraded(self) -> bool:
        """Whether counts are kept in this process because the shared storage is down."""
        return self._outage_since is not None

    async def hit(self, identifier: str) -> RateLimitState:
        """Count one request for ``identifier``, in this process's counters if Redis is down."""
        key = self.key_for(identifier)
        storage = self.storage
        if isinstance(storage, ProcessCounters):  # cannot fail: no outage to handle
            return self._state(*storage.hit_window(key, self._expiry))
        if self._outage_since is not None:
            now = self._clock()
            if now < self._next_probe:
                return await self._count(self.fallback, key)
            # This request probes; the others keep to the fallback until it is done.
            self._next_probe = now + self.probe_interval
        try:
            outcome = await self._count(self.storage, key)
        except StorageError as exc:
            self._storage_failed(exc)
            return await self._count(self.fallback, key)
        if self._outage_since is not None:
            self._storage_recovered()
        return outcome

    async def _count(self, storage: Storage, key: str) -> RateLimitState:
        if isinstance(storage, ProcessCounters):
            return self._state(*storage.hit_window(key, self._expiry))
        if storage is self.storage and self._incr_with_ttl is not None:
            return await self._count_on_redis(self._incr_with_ttl, key)
        count = await storage.incr(key, self._expiry)
        reset_at = await storage.get_expiry(key)
        return self._state(count, reset_at, time.time())

    async def _count_on_redis(self, script: AsyncScript, key: str) -> RateLimitState:
        """One round trip instead of limits' two (``incr``, then ``ttl`` for the reset)."""
        assert isinstance(self.storage, RedisStorage)
        try:
            count, ttl_ms = await script(
                keys=[self.storage.bridge.prefixed_key(key)], args=[self._expiry]
            )
        except (RedisError, OSError) as exc:
            # What limits' wrap_exceptions would have raised: the outage path handles it.
            raise StorageError(exc) from exc
        now = time.time()
        return self._state(int(count), now + max(int(ttl_ms), 0) / 1000, now)

    def _state(self, count: int, reset_at: float, now: float) -> RateLimitState:
        amount = self.item.amount
        return RateLimitState(
            count <= amount,
            amount - count if count < amount else 0,
            max(0, math.ceil(reset_at - now)),
        )

    def _storage_failed(self, exc: StorageError) -> None:
        if self.on_storage_error is not None:
            self.on_storage_error()
        now = self._clock()
        self._next_probe = now + self.probe_interval
        if self._outage_since is not None:
            return
        self._outage_since = now
        logger.warning(
            "rate_limit_storage_unreachable",
            error=str(exc.storage_error),
            fallback="per-process in-memory limits at the same rate",
            probe_interval=self.probe_interval,
        )

    def _storage_recovered(self) -> None:
        assert self._outage_since is not None
        # Warning like the outage line, so the pair is seen wherever one of them is.
        logger.warning(
            "rate_limit_storage_recovered",
            outage_seconds=round(self._clock() - self._outage_since, 3),
        )
        self._outage_since = None

    def headers(self, outcome: RateLimitState) -> list[tuple[bytes, bytes]]:
        """The ``RateLimit-*`` trio plus the current draft's ``RateLimit-Policy``/``RateLimit``."""
        remaining = str(outcome.remaining).encode()
        reset = str(outcome.reset_after).encode()
        return [
            (b"ratelimit-limit", self.limit_header),
            (b"ratelimit-remaining", remaining),
            (b"ratelimit-reset", reset),
            (b"ratelimit-policy", self.policy_header),
            (b"ratelimit", b'"' + _POLICY_NAME.encode() + b'";r=' + remaining + b";t=" + reset),
        ]

    def exceeded(self, outcome: RateLimitState) -> ApiError:
        """The 429 for a refused hit; ``Retry-After`` is at least 1 s and never before the reset."""
        retry_after = max(1, outcome.reset_after)
        return ApiError(
            429,
            "rate_limited",
            f"Rate limit of {self.item!r} exceeded; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def _window_script(storage: Storage) -> AsyncScript | None:
    """The one-round-trip hit for limits' redis-py storage, registered on its own client.

    The key is the one limits' ``incr`` uses (its bridge's prefix), so its
    strategies and ``clear`` see the same counter. Other storages keep limits' calls.
    """
    if not isinstance(storage, RedisStorage):
        return None
    from limits.aio.storage.redis.redispy import RedispyBridge

    bridge = storage.bridge
    if not isinstance(bridge, RedispyBridge):
        return None
    # limits types its client as a protocol whose register_script returns a sync Script;
    # redis.asyncio's returns the AsyncScript awaited above.
    return cast("AsyncScript", bridge.get_connection().register_script(_INCR_WITH_TTL.encode()))


def _redis_pool(url: str) -> ConnectionPool | None:
    """For a Redis storage URL, the redis-py pool it will use: short timeouts, one retry.

    The client defaults (5 s timeouts, ten retries with backoff) would hold every
    request for seconds before it degrades. One immediate retry covers a pooled
    connection closed by a Redis restart without counting that as an outage.
    Building the pool here, rather than letting ``limits`` build it, is what lets
    :meth:`RateLimiter.aclose` close it.
    """
    scheme, _, rest = url.partition("://")
    if scheme not in ("async+redis", "async+rediss", "async+redis+unix"):
        return None
    from redis.asyncio import ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client_url = f"{scheme.removeprefix('async+').replace('redis+unix', 'unix')}://{rest}"
    return ConnectionPool.from_url(
        client_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_COMMAND_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


def async_storage_url(url: str) -> str:
    """Map the URLs users type (``memory://``, ``redis://…``) to limits' async schemes."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"Invalid rate-limit storage URL {url!r}: expected scheme://…")
    if scheme.startswith("async+"):
        return url
    return f"async+{scheme}://{rest}"


class RateLimitLayer:
    """Counts every request but ``/health`` and stamps ``RateLimit-*`` on its response, or 429s it.

    Keyed by the SHA-256 of the presented ``Authorization`` value (the raw key
    never reaches the storage) or, without one, by the client address. It runs
    before authentication, so a request with a wrong key is counted too and its
    401 carries the headers. Headers are added to responses produced below by
    wrapping ``send``, and left in the request state for the envelope layer,
    which renders exceptions from below after this layer's ``send`` is out of
    the way.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        exempt_paths: frozenset[str] = frozenset({"/health"}),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_on_shutdown(send))
            return
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return

        authorization = header(scope, b"authorization")
        if authorization is not None:
            identifier = "key:" + hashlib.sha256(authorization).hexdigest()
        else:
            client = scope.get("client")
            identifier = "addr:" + (client[0] if client else "unknown")

        outcome = await self.limiter.hit(identifier)
        state(scope)[RATE_LIMIT_STATE_KEY] = outcome
        headers = self.limiter.headers(outcome)
        if not outcome.allowed:
            await send_error(send, self.limiter.exceeded(outcome), headers)
            return
        state(scope)[ERROR_HEADERS_STATE_KEY] = headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _closing_on_shutdown(self, send: Send) -> Send:
        """Close the limiter's connections once the app below has shut down."""

        async def send_after_closing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.limiter.aclose()
            await send(message)

        return send_after_closing
