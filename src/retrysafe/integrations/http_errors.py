"""Framework-neutral builders for the errors a web framework raises on its own.

Routing failures, ``HTTPException``-style errors and request validation problems
become :class:`~retrysafe.envelope.ApiError` here, so that the Starlette, FastAPI
and Litestar handlers (and the reference service) word them identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from retrysafe.envelope import ApiError, ErrorObject, reason_phrase

__all__ = [
    "ECHO_LIMIT",
    "FieldProblem",
    "Location",
    "Problem",
    "http_error",
    "json_pointer",
    "method_not_allowed",
    "route_not_found",
    "validation_error",
]

ECHO_LIMIT = 100
"""Characters of a client-chosen path quoted back in an error."""


def route_not_found(method: str, path: str, *, hint: str | None = None) -> ApiError:
    """404 ``not_found`` for a path no route matches; ``hint`` names where routes are listed."""
    where = f"; see {hint}" if hint else ""
    return ApiError(404, "not_found", f"No route {method} {path[:ECHO_LIMIT]}{where}.")


def method_not_allowed(method: str, path: str, allowed: Sequence[str]) -> ApiError:
    """405 ``method_not_allowed`` with an ``Allow`` header listing what the path accepts."""
    names = ", ".join(allowed)
    return ApiError(
        405,
        "method_not_allowed",
        f"{method} is not allowed on {path[:ECHO_LIMIT]}; allowed: {names}.",
        headers={"Allow": names},
    )


def http_error(status: int, detail: object, headers: Mapping[str, str] | None = None) -> ApiError:
    """An ``HTTPException(status, detail)`` raised by an app: its status, a code from the phrase.

    ``HTTPException(409, "taken")`` becomes 409 ``conflict`` with details ``taken``;
    a detail that is only the reason phrase is replaced by a sentence.
    """
    phrase = reason_phrase(status)
    code = phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")
    text = str(detail) if detail not in (None, "") else ""
    if not text or text == phrase:
        text = f"The request failed with {status} {phrase}."
    return ApiError(status, code, text, headers=headers)


class Location(Enum):
    """Where a problem with a request was found; a body problem has a JSON pointer."""

    BODY = "body"
    QUERY = "query"
    PATH = "path"
    HEADER = "header"
    COOKIE = "cookie"


class Problem(Enum):
    """What kind of problem: shape problems answer 400, value problems 422 (SPEC §1)."""

    INVALID_JSON = ("invalid_json", 400)
    MISSING = ("parameter_missing", 400)
    WRONG_TYPE = ("invalid_type", 400)
    UNKNOWN = ("unknown_parameter", 400)
    INVALID_VALUE = ("invalid_value", 422)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem a framework's validator found, in terms any framework can give."""

    location: Location
    path: tuple[str | int, ...]
    """Keys and indexes from the location's root to the field (``("data", "attributes", "x")``)."""
    problem: Problem
    message: str
    """The validator's own sentence, e.g. ``should be a valid string``."""


def json_pointer(path: Iterable[str | int]) -> str:
    """RFC 6901: ``("data", "a/b", 0)`` is ``/data/a~1b/0``."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path)


def _error_object(problem: FieldProblem) -> ErrorObject:
    message = problem.message.rstrip(".")
    if problem.location is Location.BODY:
        if problem.problem is Problem.INVALID_JSON:
            return ErrorObject(400, "invalid_json", f"The body is not valid JSON: {message}.")
        if not problem.path:
            return ErrorObject(problem.problem.status, problem.problem.code, f"The body {message}.")
        field = _dotted(problem.path)
        return ErrorObject(
            problem.problem.status,
            problem.problem.code,
            f"{field} {message}.",
            json_pointer(problem.path),
        )
    # Parameters outside the body have no pointer; each is a shape problem of the request.
    name = _dotted(problem.path) or "?"
    return ErrorObject(
        400,
        "invalid_parameter",
        f"{problem.location.value.capitalize()} parameter {name} {message}.",
    )


def validation_error(problems: Sequence[FieldProblem]) -> ApiError:
    """All ``problems`` in one answer: 400 if any is a shape problem, else 422 (SPEC §1).

    Every error object carries the response's status, as the service's own
    validation does, so a client reading ``errors[0].status`` reads the HTTP status.
    """
    objects = [_error_object(problem) for problem in problems] or [
        ErrorObject(400, "invalid_parameter", "The request is invalid.")
    ]
    status = 400 if any(e.status == 400 for e in objects) else 422
    objects = [replace(e, status=status) for e in objects]
    return ApiError(status, objects[0].code, objects[0].details, errors=objects)
