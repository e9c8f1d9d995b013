"""Authorization: which API-key scope each endpoint needs (403 ``permission_denied``).

The scope of every endpoint is written once, in :data:`ENDPOINT_SCOPES` (SPEC §4's
table). :class:`RouteScopes` hands it to the pipeline, which refuses a key
without the scope *before* the idempotency layer, so such a key never gets a
recorded answer replayed. Handlers check again with :func:`require_scope`; a
test holds the two to agreement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.routing import BaseRoute

from retrysafe.asgi import Scope
from retrysafe.envelope import ApiError
from retrysafe.pipeline.authorization import Endpoint, NoRoute, Resolution, WrongMethod
from retrysafe.pipeline.principal import Principal, principal_of
from retrysafe.service.serialization import API_PREFIX

ENDPOINT_SCOPES: Mapping[tuple[str, str], str] = {
    ("POST", f"{API_PREFIX}/accounts"): "accounts:write",
    ("GET", f"{API_PREFIX}/accounts"): "accounts:read",
    ("GET", f"{API_PREFIX}/accounts/{{account_id}}"): "accounts:read",
    ("PATCH", f"{API_PREFIX}/accounts/{{account_id}}"): "accounts:write",
    ("POST", f"{API_PREFIX}/inquiries"): "inquiries:write",
    ("GET", f"{API_PREFIX}/inquiries"): "inquiries:read",
    ("GET", f"{API_PREFIX}/inquiries/{{inquiry_id}}"): "inquiries:read",
    **{
        ("POST", f"{API_PREFIX}/inquiries/{{inquiry_id}}/{action}"): "inquiries:write"
        for action in ("complete", "approve", "decline", "expire")
    },
    ("POST", f"{API_PREFIX}/inquiries/{{inquiry_id}}/documents"): "documents:write",
    ("GET", f"{API_PREFIX}/documents/{{document_id}}"): "documents:read",
    ("GET", f"{API_PREFIX}/documents/{{document_id}}/content"): "documents:read",
    ("POST", f"{API_PREFIX}/inquiries/{{inquiry_id}}/verifications"): "inquiries:write",
    ("GET", f"{API_PREFIX}/verifications/{{verification_id}}"): "inquiries:read",
    ("GET", f"{API_PREFIX}/api-logs"): "logs:read",
    ("GET", f"{API_PREFIX}/api-logs/{{log_id}}"): "logs:read",
}
"""(method, route path) → the scope a key needs; SPEC §4. HEAD needs what GET needs."""

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def require_scope(request: Request, scope: str) -> Principal:
    """The caller, if its key carries ``scope``; raises 403 otherwise.

    A missing principal means the app runs without the authentication layer, which
    is a deployment mistake; answering 401 keeps it from serving anyone's data.
    """
    principal = principal_of(request.scope)
    if principal is None:
        raise ApiError(401, "unauthenticated", "Send an API key: Authorization: Bearer <key>.")
    if scope not in principal.scopes:
        raise ApiError(
            403,
            "permission_denied",
            f"This API key lacks the {scope} scope; create a key that has it.",
        )
    return principal


@dataclass(frozen=True, slots=True)
class ServedEndpoint:
    """One route of the handler app: its compiled path, its full template and methods."""

    pattern: re.Pattern[str]
    path: str
    methods: frozenset[str]


class RouteScopes:
    """The pipeline's route table over the handler app's own routes.

    Each route's own compiled pattern (Starlette's ``path_regex``, found inside
    FastAPI's included routers too) decides which endpoint a path names, so the
    table and the router agree on it. A route with no entry in ``scopes`` needs
    none here (its handler still decides). The routes are read on first use:
    the app may gain routes after the pipeline around it is built.
    """

    def __init__(
        self, routes: Iterable[BaseRoute], scopes: Mapping[tuple[str, str], str] = ENDPOINT_SCOPES
    ) -> None:
        self._routes = routes
        self._scopes = scopes
        self._endpoints: list[ServedEndpoint] | None = None

    def resolve(self, scope: Scope) -> Resolution:
        if self._endpoints is None:
            self._endpoints = list(served_endpoints(self._routes))
        path, method = scope["path"], scope["method"]
        allowed: set[str] = set()
        for endpoint in self._endpoints:
            if endpoint.pattern.match(path) is None:
                continue
            if method in endpoint.methods:
                lookup = "GET" if method == "HEAD" else method
                return Endpoint(self._scopes.get((lookup, endpoint.path)))
            allowed |= endpoint.methods
        if not allowed:
            return NoRoute()
        return WrongMethod(tuple(method for method in _METHOD_ORDER if method in allowed))


def served_endpoints(routes: Iterable[BaseRoute]) -> Iterator[ServedEndpoint]:
    """Every plain route, including those inside FastAPI's included routers, in router order."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        candidates = contexts() if callable(contexts) else [route]
        for candidate in candidates:
            pattern = getattr(candidate, "path_regex", None)
            path = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
            methods = getattr(candidate, "methods", None)
            if isinstance(pattern, re.Pattern) and isinstance(path, str) and methods:
                yield ServedEndpoint(pattern, path, frozenset(methods))
