"""The one error envelope: typed API errors and the only code that turns them into bytes.

Every layer and handler raises :class:`ApiError`; nobody writes error JSON by hand,
and :func:`error_for` is the one place an arbitrary exception becomes one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from retrysafe.asgi import Send
from retrysafe.unavailable import StoreUnavailable

JSON_CONTENT_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class ErrorObject:
    """One entry of the ``errors`` list: what went wrong with one thing."""

    status: int
    code: str
    details: str
    pointer: str | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "title": reason_phrase(self.status),
            "details": self.details,
            "status": str(self.status),
            "code": self.code,
        }
        if self.pointer is not None:
            body["source"] = {"pointer": self.pointer}
        return body


class ApiError(Exception):
    """An error with a place in the SPEC §1 table; becomes the envelope unchanged.

    ``headers`` carries what the status needs beside the body, such as ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        details: str,
        *,
        pointer: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[ErrorObject] = (),
    ) -> None:
        super().__init__(details)
        self.status = status
        self.errors: tuple[ErrorObject, ...] = tuple(errors) or (
            ErrorObject(status, code, details, pointer),
        )
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def code(self) -> str:
        return self.errors[0].code

    def body(self) -> bytes:
        return envelope_bytes(self.errors)


@dataclass(slots=True)
class FieldErrors:
    """Collects every field problem of one body so validation reports them all at once."""

    errors: list[ErrorObject] = field(default_factory=list)

    def add(self, status: int, code: str, details: str, pointer: str) -> None:
        self.errors.append(ErrorObject(status, code, details, pointer))

    def raise_if_any(self) -> None:
        """Raise one 400 when any error is about shape (missing, wrong type), else one 422."""
        if not self.errors:
            return
        status = 400 if any(e.status == 400 for e in self.errors) else 422
        # Every object speaks for the response it is in: its status and title are the
        # response's, so a client reading errors[0].status reads the HTTP status.
        errors = [replace(e, status=status) for e in self.errors]
        raise ApiError(status, errors[0].code, errors[0].details, errors=errors)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def envelope_bytes(errors: Iterable[ErrorObject]) -> bytes:
    return json.dumps(
        {"errors": [e.as_json() for e in errors]}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def internal_error(request_id: str) -> ApiError:
    """The 500 body: names the Request-Id so support can find the log line, and nothing else."""
    return ApiError(
        500,
        "internal_error",
        f"The server failed to handle this request. Quote Request-Id {request_id} to support.",
    )


def naming_request(error: ApiError, request_id: str) -> ApiError:
    """``error``, whose details name the Request-Id when it is a 5xx (SPEC §1).

    A 5xx is where a client needs support to read the server's log; the id finds
    the line. Errors below 500, and those already naming it, come back unchanged.
    """
    if error.status < 500 or all(request_id in e.details for e in error.errors):
        return error
    quote = f" Quote Request-Id {request_id} to support."
    errors = [
        e if request_id in e.details else replace(e, details=e.details + quote)
        for e in error.errors
    ]
    return ApiError(
        error.status, errors[0].code, errors[0].details, headers=error.headers, errors=errors
    )


def database_unavailable() -> ApiError:
    """The 503 for an unreachable store: the request did not run, so retrying is safe."""
    return store_unavailable("database")


def store_unavailable(dependency: str, subject: str | None = None) -> ApiError:
    """The 503 for an unreachable ``dependency`` (``database``, ``redis``): nothing ran.

    ``subject`` names it for the client when the raiser knows better
    (``idempotency store (redis)``, see :class:`~retrysafe.unavailable.StoreUnavailable`).
    """
    what = subject or ("database" if dependency == "database" else f"{dependency} store")
    return ApiError(
        503,
        "service_unavailable",
        f"The {what} is unreachable; the request did not run. Retry it shortly.",
        headers={"Retry-After": "1"},
    )


def error_for(exc: BaseException, request_id: str) -> ApiError:
    """The envelope the client gets for ``exc``; every layer and exception handler asks here.

    An :class:`ApiError` keeps its place in the table; a
    :class:`~retrysafe.unavailable.StoreUnavailable` is the 503 of a backend that
    could not be reached (the request did not run, so a retry is safe); anything
    else is the 500 that names only the Request-Id, never the exception's text.
    Every 5xx comes back naming ``request_id`` (:func:`naming_request`). Logging
    is the caller's: this function only decides.
    """
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, StoreUnavailable):
        error = store_unavailable(exc.dependency, exc.subject)
    else:
        error = internal_error(request_id)
    return naming_request(error, request_id)


async def send_error(
    send: Send, error: ApiError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send ``error`` as a complete response; the caller owns any request-wide headers."""
    body = error.body()
    headers = [
        (b"content-type", JSON_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
