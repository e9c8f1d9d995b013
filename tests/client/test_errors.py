"""Non-2xx answers become the most specific exception, carrying everything support needs."""

from __future__ import annotations

import httpx
import pytest

from retrysafe import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IdempotencyInProgressError,
    IdempotencyMismatchError,
    InvalidStateTransitionError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)
from retrysafe.client._errors import error_from_response


def envelope(status: int, code: str, **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "title": "T",
        "details": f"details of {code}",
        "status": str(status),
        "code": code,
    }
    entry.update(extra)
    return {"errors": [entry]}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_json", BadRequestError),
        (401, "unauthenticated", AuthenticationError),
        (403, "permission_denied", PermissionDeniedError),
        (403, "quota_exceeded", QuotaExceededError),
        (404, "not_found", NotFoundError),
        (409, "duplicate_resource", ConflictError),
        (409, "idempotency_request_in_progress", IdempotencyInProgressError),
        (413, "payload_too_large", PayloadTooLargeError),
        (415, "unsupported_media_type", UnsupportedMediaTypeError),
        (422, "invalid_value", UnprocessableEntityError),
        (422, "idempotency_key_mismatch", IdempotencyMismatchError),
        (422, "invalid_state_transition", InvalidStateTransitionError),
        (429, "rate_limited", RateLimitError),
        (500, "internal_error", ServerError),
        (502, "bad_gateway", ServerError),
        (503, "service_unavailable", ServiceUnavailableError),
        (504, "gateway_timeout", ServerError),
        (418, "teapot", APIStatusError),
    ],
)
def test_status_and_code_map_to_the_most_specific_class(
    status: int, code: str, cls: type[APIStatusError]
) -> None:
    response = httpx.Response(status, json=envelope(status, code))
    error = error_from_response(response, idempotency_key="k")
    assert type(error) is cls
    assert error.code == code


def test_error_carries_status_errors_request_id_headers_and_key() -> None:
    response = httpx.Response(
        422,
        headers={"Request-Id": "req_123", "RateLimit-Remaining": "7"},
        json={
            "errors": [
                {
                    "title": "Unprocessable Entity",
                    "details": "birthdate must not be in the future",
                    "status": "422",
                    "code": "invalid_value",
                    "source": {"pointer": "/data/attributes/birthdate"},
                },
                {
                    "title": "Unprocessable Entity",
                    "details": "bad email",
                    "status": "422",
                    "code": "invalid_value",
                    "source": {"pointer": "/data/attributes/email_address"},
                },
            ]
        },
    )
    error = error_from_response(response, idempotency_key="key-1")
    assert error.status_code == 422
    assert error.request_id == "req_123"
    assert error.headers["ratelimit-remaining"] == "7"
    assert error.idempotency_key == "key-1"
    assert [e.pointer for e in error.errors] == [
        "/data/attributes/birthdate",
        "/data/attributes/email_address",
    ]
    assert error.errors[0].details == "birthdate must not be in the future"
    assert "req_123" in str(error)
    assert "invalid_value" in str(error)
    assert not error.indeterminate


def test_an_answer_is_the_services_when_it_has_the_envelope_and_a_request_id() -> None:
    """Only then can the client trust what the status says about the idempotency record."""
    body = envelope(500, "internal_error")
    ours = error_from_response(
        httpx.Response(500, headers={"Request-Id": "req_9"}, json=body), idempotency_key=None
    )
    no_id = error_from_response(httpx.Response(500, json=body), idempotency_key=None)
    html = error_from_response(
        httpx.Response(502, headers={"Request-Id": "lb-1"}, content=b"<html>"),
        idempotency_key=None,
    )
    assert isinstance(ours, ServerError)
    assert (ours.from_service, no_id.from_service, html.from_service) == (True, False, False)
    assert "not from the service" in str(html)
    assert "not from the service" not in str(ours)


def test_outcome_attributes_default_to_nothing_happened() -> None:
    """Until a call fills them in, an error claims nothing ran and nothing was recorded."""
    error = error_from_response(
        httpx.Response(500, json=envelope(500, "internal_error")), idempotency_key=None
    )
    assert (error.may_have_executed, error.recorded, error.indeterminate) == (False, False, False)
    assert (error.idempotency_keys, error.request_ids, error.attempts) == ((), (), 0)


def test_body_that_is_not_an_envelope_still_maps_by_status() -> None:
    """A load balancer's HTML 502 has no envelope; it is still a ServerError."""
    response = httpx.Response(502, content=b"<html>Bad Gateway</html>")
    error = error_from_response(response, idempotency_key=None)
    assert type(error) is ServerError
    assert error.errors == ()
    assert error.code is None


def test_rate_limit_error_exposes_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "7"}, json=envelope(429, "rate_limited"))
    error = error_from_response(response, idempotency_key=None)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0
