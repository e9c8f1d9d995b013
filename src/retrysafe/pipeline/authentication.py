"""Authentication: ``Authorization: Bearer <key>`` becomes a Principal, else 401.

Failed attempts are also counted per client address (:class:`FailedAuthentications`):
the rate limiter keys on the presented key, so without this a key guesser would
get a fresh budget with every guess.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias, runtime_checkable

from limits.errors import StorageError

from retrysafe.asgi import ASGIApp, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.idempotency.keys import InvalidIdempotencyKey, parse_idempotency_key
from retrysafe.idempotency.store import PREFETCHED_STATE_KEY, Prefetched
from retrysafe.pipeline.idempotency import IDEMPOTENT_METHODS
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal
from retrysafe.pipeline.rate_limit import RateLimiter

__all__ = [
    "DEFAULT_PUBLIC_PATHS",
    "AuthenticationLayer",
    "Authenticator",
    "FailedAuthentications",
    "RecordPrefetchingAuthenticator",
]

Authenticator: TypeAlias = Callable[[str], Awaitable[Principal | None]]
"""Looks up a presented secret; ``None`` when it is unknown or revoked.

The authenticator owns hashing and the constant-time comparison; this layer only
extracts the secret from the header and never logs or stores it.
"""


@runtime_checkable
class RecordPrefetchingAuthenticator(Protocol):
    """An :data:`Authenticator` that can also read a request's idempotency record.

    The key lookup and the record live in one database: one round trip brings
    both, and the idempotency layer starts from that record instead of reading it
    again (:class:`~retrysafe.idempotency.store.Prefetched`).
    """

    async def __call__(self, presented: str) -> Principal | None: ...

    async def with_record(
        self, presented: str, idempotency_key: str
    ) -> tuple[Principal | None, Prefetched | None]:
        """The principal, and the committed record of ``idempotency_key`` in its organization."""
        ...


DEFAULT_PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/redoc"})

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_MISSING = "Provide an API key as 'Authorization: Bearer <key>'."
_UNKNOWN = "The API key is unknown or revoked."


_MAX_BLOCKED = 10_000
"""Addresses one process remembers as blocked; past it, expired entries are dropped first."""


class FailedAuthentications:
    """Failed authentications per client address, counted in a ``limits`` storage.

    Past the limit (``60/minute`` by default), every request from the address that
    presents a key is answered 429 *before* the key is looked up, until the window
    ends: a guesser learns nothing more, and the database is not asked. Requests
    without a key are not counted (they guess nothing).

    The count is shared by all processes when the storage is Redis. Each process
    also remembers the addresses it has seen go over the limit, so the check costs
    no round trip on the hot path; another process learns of a block at the next
    failure it sees there, so a guesser gets at most one more try per process.
    Addresses are the TCP peer's: behind a proxy, all clients share its address.
    """

    def __init__(self, limiter: RateLimiter, clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self._clock = clock
        self._blocked: dict[str, float] = {}

    def refusal(self, address: str) -> ApiError | None:
        """The 429 for an address over the limit, or None."""
        until = self._blocked.get(address)
        if until is None:
            return None
        remaining = until - self._clock()
        if remaining <= 0:
            del self._blocked[address]
            return None
        retry_after = max(1, math.ceil(remaining))
        return ApiError(
            429,
            "rate_limited",
            f"Too many failed authentications from this address; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def record(self, address: str) -> None:
        """Count one failure; at the limit, block the address until its window ends."""
        limiter = self.limiter
        key = limiter.key_for("authfail:" + address)
        try:
            count = await limiter.storage.incr(key, limiter.item.get_expiry())
            if count < limiter.item.amount:
                return
            until = await limiter.storage.get_expiry(key)
        except StorageError as exc:
            # Fail closed, like the rate limiter: with the counter down, guesses go uncounted.
            raise ApiError(
                503,
                "service_unavailable",
                "The rate-limit store is unreachable; the request did not run. Retry it shortly.",
                headers={"Retry-After": "1"},
            ) from exc
        if len(self._blocked) >= _MAX_BLOCKED:
            now = self._clock()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            if len(self._blocked) >= _MAX_BLOCKED:
                self._blocked.clear()
        self._blocked[address] = until


class AuthenticationLayer:
    """Stores the caller's :class:`Principal` in the request state, or answers 401.

    It sits above the idempotency layer so that a 401 is never recorded: a retry
    with a fixed credential runs the request. Given ``failures``, an address with
    too many failed attempts is answered 429 before its key is looked up.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_paths: frozenset[str] = DEFAULT_PUBLIC_PATHS,
        failures: FailedAuthentications | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths
        self.failures = failures
        self._with_record = (
            authenticator.with_record
            if isinstance(authenticator, RecordPrefetchingAuthenticator)
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        secret = bearer_secret(header(scope, b"authorization"))
        if secret is None:
            await send_error(send, ApiError(401, "unauthenticated", _MISSING, headers=_CHALLENGE))
            return
        failures, address = self.failures, client_address(scope)
        if failures is not None:
            refusal = failures.refusal(address)
            if refusal is not None:
                await send_error(send, refusal)
                return
        key = _idempotency_key(scope) if self._with_record is not None else None
        if key is not None:
            assert self._with_record is not None
            principal, prefetched = await self._with_record(secret, key)
            if principal is not None and prefetched is not None:
                state(scope)[PREFETCHED_STATE_KEY] = prefetched
        else:
            principal = await self.authenticator(secret)
        if principal is None:
            if failures is not None:
                await failures.record(address)
            await send_error(send, ApiError(401, "unauthenticated", _UNKNOWN, headers=_CHALLENGE))
            return
        state(scope)[PRINCIPAL_STATE_KEY] = principal
        await self.app(scope, receive, send)


def _idempotency_key(scope: Scope) -> str | None:
    """The request's valid ``Idempotency-Key``, where the idempotency layer will use one."""
    if scope["method"] not in IDEMPOTENT_METHODS:
        return None
    raw = header(scope, b"idempotency-key")
    if raw is None:
        return None
    try:
        return parse_idempotency_key(raw)
    except InvalidIdempotencyKey:
        return None  # the idempotency layer answers the 400


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def bearer_secret(authorization: bytes | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value (scheme case-insensitive), else None."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.decode("latin-1").strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return None
    return secret
