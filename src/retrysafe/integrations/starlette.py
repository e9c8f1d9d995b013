"""Starlette exception handlers that answer every error of the app in the one envelope.

``install(app)`` (or ``Starlette(exception_handlers=exception_handlers())``)
replaces Starlette's ``{"detail": ...}`` and plain-text answers: a 404 or 405
from the router, an ``HTTPException`` raised by a handler, an
:class:`~retrysafe.envelope.ApiError`, an unreachable store and any other
exception (a 500 naming only the Request-Id) all leave as the envelope, through
:func:`~retrysafe.envelope.error_for`. The Request-Id is the one the pipeline's
envelope layer gave the request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from retrysafe.envelope import ApiError, error_for, reason_phrase
from retrysafe.integrations.http_errors import http_error, method_not_allowed, route_not_found
from retrysafe.observability.records import note_dependency_error
from retrysafe.pipeline.principal import request_id_of
from retrysafe.unavailable import StoreUnavailable

__all__ = [
    "ExceptionHandler",
    "HandlerKey",
    "envelope_response",
    "exception_handlers",
    "install",
    "render_api_error",
    "render_http_exception",
    "render_store_unavailable",
    "render_unexpected",
]

ExceptionHandler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]
HandlerKey = int | type[Exception]
"""What Starlette keys handlers by: a status code or an exception class."""

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_JSON = "application/json"

logger = structlog.get_logger("retrysafe")


def exception_handlers() -> dict[HandlerKey, ExceptionHandler]:
    """The handlers, keyed as Starlette's ``exception_handlers`` argument expects them."""
    return {
        ApiError: render_api_error,
        StoreUnavailable: render_store_unavailable,
        HTTPException: render_http_exception,
        Exception: render_unexpected,
    }


def install(app: Starlette, handlers: Mapping[HandlerKey, ExceptionHandler] | None = None) -> None:
    """Register the handlers on ``app`` (before it serves its first request)."""
    for key, handler in (exception_handlers() if handlers is None else handlers).items():
        app.add_exception_handler(key, handler)


def envelope_response(request: Request, exc: BaseException) -> Response:
    """The envelope :func:`~retrysafe.envelope.error_for` chose for ``exc``, as a response."""
    error = error_for(exc, request_id_of(request.scope))
    return Response(error.body(), status_code=error.status, headers=error.headers, media_type=_JSON)


async def render_api_error(request: Request, exc: Exception) -> Response:
    return envelope_response(request, exc)


async def render_store_unavailable(request: Request, exc: Exception) -> Response:
    # Rendered here rather than left to the pipeline: an exception leaving Starlette
    # would first be answered as a plain-text 500 by its ServerErrorMiddleware.
    assert isinstance(exc, StoreUnavailable)
    logger.warning(
        "store unavailable",
        request_id=request_id_of(request.scope),
        dependency=exc.dependency,
        error=str(exc),
    )
    note_dependency_error(request.scope, exc.dependency)  # type: ignore[arg-type]
    return envelope_response(request, exc)


async def render_http_exception(request: Request, exc: Exception) -> Response:
    """The router's 404/405 and any ``HTTPException`` a handler raised, as the envelope."""
    assert isinstance(exc, HTTPException)
    status, detail = exc.status_code, exc.detail
    if status < 400:  # e.g. HTTPException(304): a bodiless answer, not an error
        return Response(status_code=status, headers=exc.headers)
    routed = detail in (None, "", reason_phrase(status))
    if status == 404 and routed:
        error = route_not_found(request.method, request.url.path, hint=_openapi_url(request))
    elif status == 405 and routed:
        error = method_not_allowed(request.method, request.url.path, _allowed_methods(request, exc))
        error.headers = {**(exc.headers or {}), **error.headers}
    else:
        error = http_error(status, detail, exc.headers)
    return envelope_response(request, error)


async def render_unexpected(request: Request, exc: Exception) -> Response:
    """The 500 naming only the Request-Id.

    Starlette re-raises the exception after sending this: the pipeline's envelope
    layer logs it under the Request-Id, and its idempotency layer records this 500.
    """
    return envelope_response(request, exc)


def _openapi_url(request: Request) -> str | None:
    url = getattr(request.app, "openapi_url", None)
    return url if isinstance(url, str) and url else None


def _allowed_methods(request: Request, exc: HTTPException) -> list[str]:
    """Every method some route accepts on this path.

    Starlette's ``Allow`` names only the first route that matched the path; with
    one route per method (``GET`` and ``POST /accounts``) every route is asked.
    """
    routes = getattr(getattr(request.app, "router", None), "routes", None)
    if routes:
        allowed = [
            method
            for method in _METHODS
            if any(
                route.matches({**request.scope, "method": method})[0] is Match.FULL
                for route in routes
            )
        ]
        if allowed:
            return allowed
    header = (exc.headers or {}).get("Allow", "")
    return [method.strip() for method in header.split(",") if method.strip()]
