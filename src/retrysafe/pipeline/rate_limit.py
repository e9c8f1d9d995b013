"""Rate limiting per presented API key (hashed) or client address, with RateLimit-* headers."""

from __future__ import annotations

import hashlib
import math
import time
from typing import NamedTuple

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.envelope_layer import ERROR_HEADERS_STATE_KEY

__all__ = [
    "RATE_LIMIT_STATE_KEY",
    "RateLimitLayer",
    "RateLimitState",
    "RateLimiter",
    "async_storage_url",
]

DEFAULT_STORAGE_URL = "memory://"

_POLICY_NAME = "default"

RATE_LIMIT_STATE_KEY = "retrysafe.rate_limit"
"""State key holding the request's :class:`RateLimitState`; the observation layer logs it."""


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

    def __init__(self, item: RateLimitItem, storage: Storage) -> None:
        if item.amount < 1:
            raise ValueError(f"A rate limit must allow at least one request, got {item!r}.")
        self.item = item
        self.storage = storage
        self.strategy = FixedWindowRateLimiter(storage)
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
        try:
            # wrap_exceptions: every backend failure arrives as one StorageError type.
            storage = storage_from_string(url, wrap_exceptions=True)
        except ConfigurationError as exc:
            raise ValueError(f"Invalid rate-limit storage URL {storage_url!r}: {exc}") from None
        if not isinstance(storage, Storage):
            raise ValueError(f"Rate-limit storage URL {storage_url!r} has no async backend.")
        return cls(items[0], storage)

    def key_for(self, identifier: str) -> str:
        return self._key_prefix + identifier + self._key_suffix

    async def hit(self, identifier: str) -> RateLimitState:
        """Count one request for ``identifier``; 503 when the storage cannot be reached."""
        key = self.key_for(identifier)
        try:
            count = await self.storage.incr(key, self._expiry)
            reset_at = await self.storage.get_expiry(key)
        except StorageError as exc:
            # Fail closed: a 503 is never recorded, so the client retries with the same key.
            raise ApiError(
                503,
                "service_unavailable",
                "The rate-limit store is unreachable; the request did not run. Retry it shortly.",
                headers={"Retry-After": "1"},
            ) from exc
        amount = self.item.amount
        return RateLimitState(
            count <= amount,
            amount - count if count < amount else 0,
            max(0, math.ceil(reset_at - time.time())),
        )

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
