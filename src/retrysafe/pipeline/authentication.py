"""Authentication: ``Authorization: Bearer <key>`` becomes a Principal, else 401."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from retrysafe.asgi import ASGIApp, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal

__all__ = ["DEFAULT_PUBLIC_PATHS", "AuthenticationLayer", "Authenticator"]

Authenticator: TypeAlias = Callable[[str], Awaitable[Principal | None]]
"""Looks up a presented secret; ``None`` when it is unknown or revoked.

The authenticator owns hashing and the constant-time comparison; this layer only
extracts the secret from the header and never logs or stores it.
"""

DEFAULT_PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/redoc"})

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_MISSING = "Provide an API key as 'Authorization: Bearer <key>'."
_UNKNOWN = "The API key is unknown or revoked."


class AuthenticationLayer:
    """Stores the caller's :class:`Principal` in the request state, or answers 401.

    It sits above the idempotency layer so that a 401 is never recorded: a retry
    with a fixed credential runs the request.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_paths: frozenset[str] = DEFAULT_PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        secret = bearer_secret(header(scope, b"authorization"))
        if secret is None:
            await send_error(send, ApiError(401, "unauthenticated", _MISSING, headers=_CHALLENGE))
            return
        principal = await self.authenticator(secret)
        if principal is None:
            await send_error(send, ApiError(401, "unauthenticated", _UNKNOWN, headers=_CHALLENGE))
            return
        state(scope)[PRINCIPAL_STATE_KEY] = principal
        await self.app(scope, receive, send)


def bearer_secret(authorization: bytes | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value (scheme case-insensitive), else None."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.decode("latin-1").strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return None
    return secret
