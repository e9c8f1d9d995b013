"""ErrorEnvelopeLayer: Request-Id on every response and the envelope for exceptions from below."""

from __future__ import annotations

import re

import pytest
from structlog.typing import EventDict

from retrysafe.asgi import Message, Receive, Scope, Send, state
from retrysafe.database.engine import DatabaseUnavailable
from retrysafe.envelope import ApiError
from retrysafe.pipeline.envelope_layer import ERROR_HEADERS_STATE_KEY, ErrorEnvelopeLayer
from retrysafe.pipeline.principal import REQUEST_ID_STATE_KEY

from .asgi_apps import EchoApp, RaisingApp, client, drive, http_scope

REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")


async def test_every_2xx_response_carries_a_unique_request_id() -> None:
    """Request ids match req_ + 24 hex, differ per request, and equal what the app saw."""
    app = EchoApp()
    async with client(ErrorEnvelopeLayer(app)) as http:
        responses = [await http.get("/things") for _ in range(5)]
    ids = [r.headers["request-id"] for r in responses]
    assert all(r.status_code == 200 for r in responses)
    assert all(REQUEST_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == 5
    assert [state(s)[REQUEST_ID_STATE_KEY] for s in app.scopes] == ids


async def test_api_error_from_below_becomes_its_envelope() -> None:
    """An ApiError keeps its status, code, details and headers, plus the Request-Id."""
    error = ApiError(409, "duplicate_resource", "reference_id is taken.", headers={"X-Why": "dup"})
    async with client(ErrorEnvelopeLayer(RaisingApp(error))) as http:
        response = await http.post("/accounts")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-why"] == "dup"
    assert REQUEST_ID.fullmatch(response.headers["request-id"])
    assert response.json() == {
        "errors": [
            {
                "title": "Conflict",
                "details": "reference_id is taken.",
                "status": "409",
                "code": "duplicate_resource",
            }
        ]
    }


async def test_database_unavailable_becomes_503_with_retry_after() -> None:
    """An unreachable database is a 503 the client may retry, with no driver text in the body."""
    exc = DatabaseUnavailable("(sqlite3.OperationalError) unable to open /srv/secret/app.db")
    async with client(ErrorEnvelopeLayer(RaisingApp(exc))) as http:
        response = await http.get("/accounts")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    [error] = response.json()["errors"]
    assert error["code"] == "service_unavailable"
    assert "database is unreachable" in error["details"]
    assert "retry" in error["details"].lower()
    assert "/srv" not in response.text
    assert "sqlite3" not in response.text


async def test_unexpected_exception_is_a_500_naming_only_the_request_id(
    captured_logs: list[EventDict],
) -> None:
    """The 500 body names the Request-Id and nothing internal; the log has the exception."""
    exc = RuntimeError("SELECT secret FROM api_keys failed in /srv/retrysafe/service.py")
    async with client(ErrorEnvelopeLayer(RaisingApp(exc))) as http:
        response = await http.get("/accounts/act_1")
    assert response.status_code == 500
    request_id = response.headers["request-id"]
    [error] = response.json()["errors"]
    assert error["code"] == "internal_error"
    assert error["title"] == "Internal Server Error"
    assert request_id in error["details"]
    for leak in ("SELECT", "secret", "/srv", "RuntimeError", "Traceback", ".py"):
        assert leak not in response.text
    [log] = [e for e in captured_logs if e["event"] == "unhandled exception"]
    assert log["request_id"] == request_id
    assert log["path"] == "/accounts/act_1"
    assert log["exc_info"] is exc
    assert log["log_level"] == "error"


async def test_exception_after_a_complete_response_is_logged_not_raised(
    captured_logs: list[EventDict],
) -> None:
    """Like FastAPI's ServerErrorMiddleware re-raising: the sent response stands."""
    app = ErrorEnvelopeLayer(RaisingApp(RuntimeError("late"), after="complete"))
    async with client(app) as http:
        response = await http.get("/things")
    assert response.status_code == 200
    assert response.text == "partial"
    assert REQUEST_ID.fullmatch(response.headers["request-id"])
    [log] = [e for e in captured_logs if e["event"] == "exception after the response started"]
    assert log["request_id"] == response.headers["request-id"]
    assert isinstance(log["exc_info"], RuntimeError)
    assert log["log_level"] == "error"


async def test_exception_mid_response_is_swallowed_and_sends_nothing_more(
    captured_logs: list[EventDict],
) -> None:
    """A half-sent response cannot become an envelope: nothing else is sent, nothing re-raised."""
    app = ErrorEnvelopeLayer(RaisingApp(RuntimeError("mid-stream"), after="start"))
    response = await drive(app, http_scope("GET"))
    assert response.status == 200
    assert response.body == b"partial"
    assert not response.complete
    assert any(e["event"] == "exception after the response started" for e in captured_logs)


async def test_error_headers_left_by_a_lower_layer_are_added_to_rendered_errors() -> None:
    """Headers in the state (the rate limiter's) appear on an error rendered from an exception."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state(scope)[ERROR_HEADERS_STATE_KEY] = [(b"ratelimit-limit", b"7")]
        raise ApiError(504, "gateway_timeout", "Too slow.")

    async with client(ErrorEnvelopeLayer(app)) as http:
        response = await http.get("/things")
    assert response.status_code == 504
    assert response.headers["ratelimit-limit"] == "7"


async def test_request_id_header_does_not_drop_the_apps_headers() -> None:
    """The Request-Id is added beside the app's headers, which stay intact."""
    async with client(ErrorEnvelopeLayer(EchoApp())) as http:
        response = await http.get("/things")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"received": 0}


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_straight_through(scope_type: str) -> None:
    """Lifespan and websocket scopes reach the app unchanged: no request id, no wrapping."""
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": scope_type}
    await ErrorEnvelopeLayer(app)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert "state" not in scope
