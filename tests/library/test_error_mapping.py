"""error_for: the one mapping from an exception to the envelope, and the builders beside it."""

from __future__ import annotations

import json

import pytest

from retrysafe.database import DatabaseUnavailable
from retrysafe.envelope import ApiError, error_for
from retrysafe.integrations.http_errors import (
    FieldProblem,
    Location,
    Problem,
    http_error,
    json_pointer,
    method_not_allowed,
    route_not_found,
    validation_error,
)
from retrysafe.unavailable import StoreUnavailable


def test_an_api_error_keeps_its_place_in_the_table() -> None:
    error = ApiError(409, "duplicate_resource", "reference_id is taken.", headers={"X": "1"})
    assert error_for(error, "req_1") is error


def test_a_5xx_api_error_comes_back_naming_the_request() -> None:
    mapped = error_for(ApiError(502, "bad_gateway", "The provider failed."), "req_42")
    assert mapped.status == 502
    assert mapped.errors[0].details == "The provider failed. Quote Request-Id req_42 to support."


def test_an_unreachable_database_is_a_retryable_503_without_driver_text() -> None:
    mapped = error_for(DatabaseUnavailable("(sqlite3.OperationalError) /srv/app.db"), "req_1")
    assert (mapped.status, mapped.code) == (503, "service_unavailable")
    assert mapped.headers == {"Retry-After": "1"}
    assert "database is unreachable" in mapped.errors[0].details
    assert "/srv" not in mapped.body().decode()
    assert "req_1" in mapped.errors[0].details


def test_an_unreachable_redis_store_says_which_store() -> None:
    mapped = error_for(StoreUnavailable("Connection refused", dependency="redis"), "req_1")
    assert mapped.status == 503
    assert "redis store is unreachable" in mapped.errors[0].details
    assert "refused" not in mapped.body().decode()


@pytest.mark.parametrize("exc", [RuntimeError("secret /etc/passwd"), KeyError("k"), ValueError()])
def test_anything_else_is_a_500_naming_only_the_request_id(exc: Exception) -> None:
    mapped = error_for(exc, "req_9")
    assert (mapped.status, mapped.code) == (500, "internal_error")
    body = mapped.body().decode()
    assert "req_9" in body
    assert "passwd" not in body
    assert type(exc).__name__ not in body


def test_http_error_takes_its_code_from_the_reason_phrase() -> None:
    error = http_error(409, "taken")
    assert (error.status, error.code, error.errors[0].details) == (409, "conflict", "taken")
    teapot = http_error(418, None)
    assert teapot.code == "im_a_teapot"
    assert teapot.errors[0].details == "The request failed with 418 I'm a Teapot."


def test_routing_errors_name_the_method_and_path() -> None:
    assert route_not_found("GET", "/nope").errors[0].details == "No route GET /nope."
    assert (
        route_not_found("GET", "/x" * 80, hint="/openapi.json")
        .errors[0]
        .details.endswith("; see /openapi.json.")
    )
    wrong = method_not_allowed("DELETE", "/things", ["GET", "POST"])
    assert wrong.status == 405
    assert wrong.headers == {"Allow": "GET, POST"}
    assert wrong.errors[0].details == "DELETE is not allowed on /things; allowed: GET, POST."


def test_json_pointer_escapes_tilde_and_slash() -> None:
    assert json_pointer(("data", "a/b", "c~d", 0)) == "/data/a~1b/c~0d/0"


def test_validation_reports_every_problem_400_when_any_is_about_shape() -> None:
    error = validation_error(
        [
            FieldProblem(Location.BODY, ("data", "name"), Problem.WRONG_TYPE, "should be a string"),
            FieldProblem(Location.BODY, ("data", "age"), Problem.INVALID_VALUE, "is too small"),
            FieldProblem(Location.QUERY, ("limit",), Problem.WRONG_TYPE, "should be an integer"),
        ]
    )
    body = json.loads(error.body())["errors"]
    assert error.status == 400
    assert [(e["status"], e["code"], e.get("source")) for e in body] == [
        ("400", "invalid_type", {"pointer": "/data/name"}),
        ("400", "invalid_value", {"pointer": "/data/age"}),
        ("400", "invalid_parameter", None),
    ]
    assert body[0]["details"] == "data.name should be a string."
    assert body[2]["details"] == "Query parameter limit should be an integer."


def test_validation_is_422_when_every_problem_is_about_values() -> None:
    error = validation_error(
        [FieldProblem(Location.BODY, ("age",), Problem.INVALID_VALUE, "is too small")]
    )
    assert (error.status, error.code) == (422, "invalid_value")
    assert json.loads(error.body())["errors"][0]["title"] == "Unprocessable Entity"
