"""Litestar exception handlers that answer every error of the app in the one envelope.

Pass ``exception_handlers()`` to ``Litestar(exception_handlers=...)`` or call
``install(app)`` before the app serves. Router 404/405, ``HTTPException`` and its
subclasses, body and parameter validation (with a JSON pointer into the body),
malformed JSON, :class:`~retrysafe.envelope.ApiError`, an unreachable store and
any other exception (a 500 naming only the Request-Id) leave as the envelope.

Litestar answers an unhandled exception itself instead of re-raising it, so the
500 handler logs it here, under the request's Request-Id. msgspec stops at the
first problem of a body, so a Litestar body validation error names one field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import structlog
from litestar import Litestar, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)

from retrysafe.asgi import Scope
from retrysafe.envelope import ApiError, error_for, reason_phrase
from retrysafe.integrations.http_errors import (
    FieldProblem,
    Location,
    Problem,
    http_error,
    method_not_allowed,
    route_not_found,
    validation_error,
)
from retrysafe.observability.records import note_dependency_error
from retrysafe.pipeline.principal import request_id_of
from retrysafe.unavailable import StoreUnavailable

__all__ = ["ExceptionHandler", "exception_handlers", "install"]

ExceptionHandler = Callable[[Request[Any, Any, Any], Exception], Response[bytes]]

_JSON = "application/json"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_LOCATIONS = {location.value: location for location in Location}
# msgspec: "Expected `str`, got `int` - at `$.data.attributes.name`"
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_WRONG_TYPE = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_PARAMETER = re.compile(r"\{([^}:]+)(:[^}]*)?\}")

logger = structlog.get_logger("retrysafe")


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """The handlers, keyed as Litestar's ``exception_handlers`` argument expects them."""
    return {
        ApiError: _render_error,
        StoreUnavailable: _render_store_unavailable,
        HTTPException: _render_http_exception,
        Exception: _render_unexpected,
    }


def install(app: Litestar, handlers: Mapping[Any, ExceptionHandler] | None = None) -> None:
    """Register the handlers on ``app``, before it serves its first request."""
    app.exception_handlers.update(exception_handlers() if handlers is None else handlers)


def _scope(request: Request[Any, Any, Any]) -> Scope:
    # Litestar types its scope as a TypedDict; the pipeline's helpers take any mapping.
    return cast(Scope, request.scope)


def _request_id(request: Request[Any, Any, Any]) -> str:
    return request_id_of(_scope(request))


def _response(request: Request[Any, Any, Any], exc: BaseException) -> Response[bytes]:
    error = error_for(exc, _request_id(request))
    return Response(
        content=error.body(), status_code=error.status, headers=error.headers, media_type=_JSON
    )


def _render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _response(request, exc)


def _render_store_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, StoreUnavailable)
    logger.warning(
        "store unavailable",
        request_id=_request_id(request),
        dependency=exc.dependency,
        error=str(exc),
    )
    note_dependency_error(_scope(request), exc.dependency)  # type: ignore[arg-type]
    return _response(request, exc)


def _render_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.error(
        "unhandled exception",
        request_id=_request_id(request),
        path=request.scope.get("path"),
        exc_info=exc,
    )
    return _response(request, exc)


def _render_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    return _response(request, _api_error(request, exc))


def _api_error(request: Request[Any, Any, Any], exc: HTTPException) -> ApiError:
    method, path = request.method, request.scope["path"]
    routed = exc.detail in ("", reason_phrase(exc.status_code))
    if isinstance(exc, NotFoundException) and routed:
        return route_not_found(method, path)
    if isinstance(exc, MethodNotAllowedException):
        return method_not_allowed(method, path, _allowed_methods(request.app, path))
    if isinstance(exc, ValidationException):
        return validation_error(_problems(exc))
    if exc.status_code == 400 and isinstance(exc.__cause__, SerializationException):
        return validation_error([FieldProblem(Location.BODY, (), Problem.INVALID_JSON, exc.detail)])
    return http_error(exc.status_code, exc.detail, exc.headers)


def _problems(exc: ValidationException) -> list[FieldProblem]:
    """Litestar's error list, with each body path taken from msgspec's own message.

    Litestar's ``key`` drops every ``data.`` from a body path (so a JSON:API
    ``/data/attributes/x`` would read ``attributes.x``); the message of the
    exception it wraps still has the whole path.
    """
    entries = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    cause = str(exc.__cause__) if exc.__cause__ is not None else ""
    problems = []
    for index, entry in enumerate(entries):
        source = entry.get("source")
        location = _LOCATIONS.get(str(getattr(source, "value", source)), Location.BODY)
        message = str(entry.get("message", "is invalid"))
        key = str(entry.get("key") or "")
        path: tuple[str | int, ...] = tuple(key.split(".")) if key else ()
        match = _AT.match(cause) if index == 0 and len(entries) == 1 else None
        if match and match.group("path") is not None:
            steps = tuple(
                name if name else int(number) for name, number in _STEP.findall(match["path"])
            )
            # The first step is the handler's parameter: ``data`` for the body.
            path = steps[1:] if location is Location.BODY else steps
        problems.append(_problem(location, path, message))
    return problems or [FieldProblem(Location.BODY, (), Problem.INVALID_VALUE, "is invalid")]


def _problem(location: Location, path: tuple[str | int, ...], message: str) -> FieldProblem:
    if missing := _MISSING.match(message):
        return FieldProblem(location, (*path, missing["field"]), Problem.MISSING, "is required")
    if unknown := _UNKNOWN.match(message):
        return FieldProblem(
            location, (*path, unknown["field"]), Problem.UNKNOWN, "is not a known parameter"
        )
    if _WRONG_TYPE.match(message):
        expected = message.split("`")[1]
        return FieldProblem(location, path, Problem.WRONG_TYPE, f"should be of type {expected}")
    return FieldProblem(location, path, Problem.INVALID_VALUE, "is invalid: " + message)


def _allowed_methods(app: Any, path: str) -> list[str]:
    methods: set[str] = set()
    for route in getattr(app, "routes", ()):
        template = getattr(route, "path_format", None) or getattr(route, "path", "")
        if isinstance(template, str) and _template_pattern(template).fullmatch(path):
            methods |= set(getattr(route, "methods", ()))
    ordered = [m for m in _METHODS if m in methods]
    return ordered + sorted(methods - set(ordered))


def _template_pattern(template: str) -> re.Pattern[str]:
    """``/things/{id}`` as a regex matching its paths (``{p:path}`` spans segments)."""
    parts, last = [], 0
    for match in _PARAMETER.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(".*" if match.group(2) == ":path" else "[^/]+")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))
