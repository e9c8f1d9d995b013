"""FastAPI exception handlers: Starlette's, plus request validation with JSON pointers.

``install(app)`` registers them. A ``RequestValidationError`` answers every
problem at once, each with its JSON pointer into the body (or naming the query,
path or header parameter), 400 when any is a shape problem and 422 otherwise,
exactly as the reference service's own validation does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from retrysafe.integrations import starlette as starlette_handlers
from retrysafe.integrations.http_errors import FieldProblem, Location, Problem, validation_error
from retrysafe.integrations.starlette import ExceptionHandler, HandlerKey, envelope_response

__all__ = ["exception_handlers", "field_problems", "install", "render_validation_error"]

_LOCATIONS = {location.value: location for location in Location}
_TYPE_SUFFIXES = ("_type", "_parsing")


def exception_handlers() -> dict[HandlerKey, ExceptionHandler]:
    return {
        **starlette_handlers.exception_handlers(),
        RequestValidationError: render_validation_error,
    }


def install(app: FastAPI, handlers: Mapping[HandlerKey, ExceptionHandler] | None = None) -> None:
    """Register the handlers on ``app``, replacing FastAPI's defaults for the same errors."""
    starlette_handlers.install(app, exception_handlers() if handlers is None else handlers)


async def render_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return envelope_response(request, validation_error(field_problems(exc.errors())))


def field_problems(errors: Any) -> list[FieldProblem]:
    """pydantic's error dicts (``type``, ``loc``, ``msg``) as framework-neutral problems."""
    problems = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        location_parts = tuple(error.get("loc") or ())
        where = str(location_parts[0]) if location_parts else "body"
        location = _LOCATIONS.get(where, Location.BODY)
        path = tuple(part if isinstance(part, int) else str(part) for part in location_parts[1:])
        kind = str(error.get("type", ""))
        if kind == "json_invalid":
            path = ()  # pydantic puts the character offset here, not a field
        problems.append(FieldProblem(location, path, _problem(kind), _sentence(kind, error)))
    return problems


def _problem(kind: str) -> Problem:
    if kind == "json_invalid":
        return Problem.INVALID_JSON
    if kind == "missing":
        return Problem.MISSING
    if kind == "extra_forbidden":
        return Problem.UNKNOWN
    if kind.endswith(_TYPE_SUFFIXES):
        return Problem.WRONG_TYPE
    return Problem.INVALID_VALUE


def _sentence(kind: str, error: Mapping[str, Any]) -> str:
    """``Input should be a valid string`` reads ``should be a valid string`` after a name."""
    text = str(error.get("msg") or "is invalid")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known parameter"
    if kind == "json_invalid":
        context = error.get("ctx")
        # pydantic's msg is "JSON decode error"; the decoder's own reason says more.
        reason = context.get("error") if isinstance(context, Mapping) else None
        return str(reason or text)
    for prefix in ("Input should", "Value should"):
        if text.startswith(prefix):
            return "should" + text[len(prefix) :]
    return "is invalid: " + text[:1].lower() + text[1:]
