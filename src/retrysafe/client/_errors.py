"""Exceptions raised by the retrysafe client, one class per status and per special code.

The tree::

    RetrysafeError                      anything the client raises on purpose
    ├── UnexpectedResponseError         a 2xx whose body breaks the API contract
    ├── APIConnectionError              no HTTP answer (connect, reset, closed mid-answer)
    │   └── APITimeoutError             an attempt timed out, or the call's deadline ran out
    └── APIStatusError                  the server answered with a non-2xx status
        ├── BadRequestError             400  malformed body, invalid Idempotency-Key
        ├── AuthenticationError         401  missing, unknown or revoked API key
        ├── PermissionDeniedError       403  key lacks the scope
        │   └── QuotaExceededError      403  code quota_exceeded
        ├── NotFoundError               404
        ├── ConflictError               409  duplicate resource
        │   └── IdempotencyInProgressError   409  code idempotency_request_in_progress
        ├── PayloadTooLargeError        413
        ├── UnsupportedMediaTypeError   415
        ├── UnprocessableEntityError    422  well-formed but unacceptable
        │   ├── IdempotencyMismatchError     422  code idempotency_key_mismatch
        │   └── InvalidStateTransitionError  422  code invalid_state_transition
        ├── RateLimitError              429
        └── ServerError                 5xx  the request may have run
            └── ServiceUnavailableError 503  the service did not run it

Callers branch on the most specific class they care about; ``code`` on each
entry of ``errors`` is the stable machine-readable reason when a class is too
coarse. Every exception also says what the call did: ``may_have_executed``
(could the request have taken effect?), ``recorded`` (will a retry with the
same key get this answer again?), every idempotency key used and every
``Request-Id`` seen. Lower-level httpx errors are always chained
(``raise … from exc``) so the transport detail stays visible in tracebacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ._retry import parse_retry_after

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ErrorDetail",
    "IdempotencyInProgressError",
    "IdempotencyMismatchError",
    "InvalidStateTransitionError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetrysafeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "error_from_response",
]


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One entry of the server's ``{"errors": [...]}`` envelope (SPEC §1)."""

    title: str
    """HTTP reason phrase of the status, e.g. ``"Unprocessable Entity"``."""
    details: str
    """A human sentence saying what to fix."""
    status: str
    """The status as a string, as in JSON:API."""
    code: str | None
    """Stable snake_case machine code such as ``duplicate_resource``; branch on this."""
    pointer: str | None
    """JSON pointer into the request body (``/data/attributes/birthdate``) for field errors."""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, status_code: int) -> ErrorDetail:
        source = raw.get("source")
        pointer = source.get("pointer") if isinstance(source, Mapping) else None
        # ``detail`` is the JSON:API spelling; accept it so a proxy or another
        # JSON:API server in front of the service does not lose its message.
        details = raw.get("details", raw.get("detail", ""))
        return cls(
            title=str(raw.get("title", "")),
            details=str(details),
            status=str(raw.get("status", status_code)),
            code=str(raw["code"]) if raw.get("code") is not None else None,
            pointer=str(pointer) if pointer is not None else None,
        )


class RetrysafeError(Exception):
    """Root of every exception the client raises on purpose.

    The attributes below describe the whole call (every attempt); the client
    fills them in when it gives up, from the README's failure taxonomy.
    """

    may_have_executed: bool = False
    """Whether the request may have taken effect on the server during this call.

    ``False`` means it certainly did not: nothing was sent, the server refused it
    before running it (401, 429, 503, a 4xx), or a read failed. ``True`` means an
    answer was lost after the request was sent, or a 5xx left it unknown.
    """
    recorded: bool | None = False
    """Whether the last answer is recorded under the idempotency key, so that a retry
    with the same key gets it again (``True``: a 500/502/504 or a handler's 4xx);
    ``False``: a retry with the same key is answered afresh; ``None``: no answer
    arrived, so it is unknown."""
    idempotency_key: str | None = None
    """The key the last attempt carried; call again with it to settle the outcome."""
    idempotency_keys: tuple[str, ...] = ()
    """Every key the call used, in order (more than one only after a new-key retry)."""
    request_ids: tuple[str, ...] = ()
    """Every ``Request-Id`` the call saw; quote them to support."""
    attempts: int = 0
    """Requests the call sent."""

    @property
    def indeterminate(self) -> bool:
        """Older name for :attr:`may_have_executed`: the outcome is not known to be "nothing"."""
        return self.may_have_executed


class UnexpectedResponseError(RetrysafeError):
    """A 2xx answer whose body is not the JSON:API document the contract promises."""


class APIConnectionError(RetrysafeError):
    """No HTTP answer arrived: connect error, reset, or the server closed mid-answer.

    Raised after the retries allowed by ``max_retries`` and ``deadline`` are
    spent. ``may_have_executed`` says whether a write may already have run —
    ``False`` when no attempt got its request to the server — and because
    every attempt carried ``idempotency_key``, calling again later with
    ``idempotency_key=err.idempotency_key`` is safe either way.
    """

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.idempotency_key = idempotency_key
        self.status_code: int | None = None
        self.errors: tuple[ErrorDetail, ...] = ()
        self.request_id: str | None = None
        self.headers = httpx.Headers()


class APITimeoutError(APIConnectionError):
    """An attempt timed out (connect, read, write, pool) or the call's deadline ran out."""


class APIStatusError(RetrysafeError):
    """The server answered with a non-2xx status; also the class for statuses with no subclass."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        errors: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
        idempotency_key: str | None = None,
        from_service: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.errors = tuple(errors)
        self.request_id = request_id
        self.headers = headers if headers is not None else httpx.Headers()
        self.idempotency_key = idempotency_key
        self.from_service = from_service
        """Whether the service produced the answer (its envelope and a ``Request-Id``),
        rather than a proxy or load balancer in front of it."""

    @property
    def code(self) -> str | None:
        """The ``code`` of the first error entry: the usual thing to branch on."""
        return self.errors[0].code if self.errors else None


class BadRequestError(APIStatusError):
    """400: malformed body (invalid JSON, missing or mistyped field) or invalid key header."""


class AuthenticationError(APIStatusError):
    """401: missing, unknown or revoked API key; never recorded, so a fixed key can retry."""


class PermissionDeniedError(APIStatusError):
    """403: the API key lacks the scope the endpoint needs."""


class QuotaExceededError(PermissionDeniedError):
    """403 ``quota_exceeded``: the organization used up its inquiry quota."""


class NotFoundError(APIStatusError):
    """404: no such resource in this organization (other organizations' resources look absent)."""


class ConflictError(APIStatusError):
    """409: the resource already exists, e.g. an account ``reference_id`` already used."""


class IdempotencyInProgressError(ConflictError):
    """409 ``idempotency_request_in_progress``: the first request with this key is still running.

    The client waits ``Retry-After`` and retries with the same key; this is
    raised only when the retry budget or the deadline ran out first.
    """


class PayloadTooLargeError(APIStatusError):
    """413: the body exceeds the server's ``--max-body`` or ``--max-upload``."""


class UnsupportedMediaTypeError(APIStatusError):
    """415: the body's ``Content-Type`` is not accepted by the endpoint."""


class UnprocessableEntityError(APIStatusError):
    """422: well-formed but unacceptable (bad value, invalid state transition)."""


class IdempotencyMismatchError(UnprocessableEntityError):
    """422 ``idempotency_key_mismatch``: the key was first used with different parameters.

    Almost always a caller bug: an idempotency key must name one operation
    with one set of parameters.
    """


class InvalidStateTransitionError(UnprocessableEntityError):
    """422 ``invalid_state_transition``: e.g. approving an inquiry that is not completed."""


class RateLimitError(APIStatusError):
    """429 after the client's waits ran out (budget, deadline, or a ``Retry-After`` too long)."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait, when it said so."""
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(APIStatusError):
    """5xx: the write may or may not have happened (``may_have_executed``).

    The service records its 500/502/504 under the idempotency key
    (``recorded`` is True), so retrying with the same key only replays the
    failure. Retrying with a new key (``retry_server_errors=True``) may run
    the write twice; it is safe only when the write is grouped by
    ``reference_id`` (see the README, "Retrying safely"). A 5xx that did not
    come from the service (``from_service`` False: no envelope or no
    ``Request-Id``) was not recorded; the client retries those with the same key.
    """


class ServiceUnavailableError(ServerError):
    """503: the service shed load or could not reach its database.

    From the service itself this means the request did not run (a 503 is
    never recorded, ``may_have_executed`` is False), and the client retries
    it with the same key on its own; this is raised when the waits ran out.
    """


_BY_CODE: Mapping[tuple[int, str], type[APIStatusError]] = {
    (403, "quota_exceeded"): QuotaExceededError,
    (409, "idempotency_request_in_progress"): IdempotencyInProgressError,
    (422, "idempotency_key_mismatch"): IdempotencyMismatchError,
    (422, "invalid_state_transition"): InvalidStateTransitionError,
}

_BY_STATUS: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def parse_error_details(content: bytes, *, status_code: int) -> tuple[ErrorDetail, ...]:
    """The typed entries of an error envelope; empty when the body is not one.

    Tolerant on purpose: a load balancer in front of the service may answer
    a 502 with HTML, and that must still become a ``ServerError``.
    """
    try:
        document = json.loads(content)
    except ValueError:
        return ()
    raw_errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(raw_errors, list):
        return ()
    return tuple(
        ErrorDetail.from_json(raw, status_code=status_code)
        for raw in raw_errors
        if isinstance(raw, Mapping)
    )


def error_class_for(status_code: int, codes: Sequence[str | None]) -> type[APIStatusError]:
    """The most specific class for a status and the error codes in its body."""
    for code in codes:
        if code is not None and (status_code, code) in _BY_CODE:
            return _BY_CODE[(status_code, code)]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return ServerError
    return APIStatusError


def error_from_response(response: httpx.Response, *, idempotency_key: str | None) -> APIStatusError:
    """Build the exception for a non-2xx response whose body has been read."""
    status_code = response.status_code
    errors = parse_error_details(response.content, status_code=status_code)
    cls = error_class_for(status_code, [error.code for error in errors])
    request_id = response.headers.get("request-id")
    if errors:
        first = errors[0]
        summary = first.details or first.title
        code = f" {first.code}" if first.code else ""
    else:
        summary = response.reason_phrase or "error"
        code = ""
    message = f"{status_code}{code}: {summary}"
    if request_id:
        message += f" (Request-Id {request_id})"
    from_service = bool(errors) and bool(request_id)
    if not from_service:
        message += " — not from the service (no error envelope or no Request-Id)"
    return cls(
        message,
        status_code=status_code,
        errors=errors,
        request_id=request_id,
        headers=response.headers,
        idempotency_key=idempotency_key,
        from_service=from_service,
    )
