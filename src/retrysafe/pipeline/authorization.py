"""Authorization before idempotency: route and scope are settled before anything is recorded.

Without this layer the handler checks the scope, i.e. *inside* the idempotency
layer: a key of the right organization but without ``accounts:write`` would get
a recorded create replayed to it, and an unknown method or path would be
recorded (or refused as a key mismatch) instead of answered 404/405.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from retrysafe.asgi import ASGIApp, Receive, Scope, Send
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.principal import principal_of

__all__ = ["AuthorizationLayer", "Endpoint", "NoRoute", "RouteTable", "WrongMethod"]

_ECHO_LIMIT = 100  # characters of a client-chosen path quoted back in an error


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The request names an endpoint; ``scope`` is what its key must carry (None: nothing)."""

    scope: str | None


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No endpoint has this path."""


@dataclass(frozen=True, slots=True)
class WrongMethod:
    """Endpoints have this path, with other methods."""

    allowed: tuple[str, ...]


Resolution = Endpoint | NoRoute | WrongMethod


class RouteTable(Protocol):
    """What the application behind the pipeline serves, and which scope each endpoint needs."""

    def resolve(self, scope: Scope) -> Resolution: ...


class AuthorizationLayer:
    """Answers 404, 405 and 403 ``permission_denied`` for authenticated requests, or passes them on.

    It sits between authentication and idempotency, so none of those answers is
    ever recorded and a replay is only ever given to a key allowed to make the
    request. Requests without a principal (public paths) pass through untouched;
    handlers keep their own scope checks, so this layer only moves the refusal
    earlier.
    """

    def __init__(self, app: ASGIApp, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_of(scope) if scope["type"] == "http" else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        found = self.routes.resolve(scope)
        if isinstance(found, Endpoint):
            if found.scope is None or found.scope in principal.scopes:
                await self.app(scope, receive, send)
                return
            error = ApiError(
                403,
                "permission_denied",
                f"This API key lacks the {found.scope} scope; create a key that has it.",
            )
        else:
            error = _routing_error(scope, found)
        await send_error(send, error)


def _routing_error(scope: Scope, found: NoRoute | WrongMethod) -> ApiError:
    method, path = scope["method"], scope["path"][:_ECHO_LIMIT]
    if isinstance(found, NoRoute):
        return ApiError(404, "not_found", f"No route {method} {path}; see /openapi.json.")
    allowed = ", ".join(found.allowed)
    return ApiError(
        405,
        "method_not_allowed",
        f"{method} is not allowed on {path}; allowed: {allowed}.",
        headers={"Allow": allowed},
    )
