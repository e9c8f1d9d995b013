"""DeadlineLayer: a request past the server-side deadline raises a 504 ApiError."""

from __future__ import annotations

import asyncio

import pytest
from structlog.typing import EventDict

from retrysafe.asgi import Receive, Scope, Send
from retrysafe.envelope import ApiError
from retrysafe.pipeline.deadline import DeadlineLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer

from .asgi_apps import EchoApp, client, drive, http_scope, send_json

TIMEOUT = 0.05


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(5)
    await send_json(send, 200, {})


async def test_slow_request_raises_504_for_the_layer_above_to_record() -> None:
    """The 504 is raised, not sent, so the idempotency layer above can record it."""
    with pytest.raises(ApiError) as raised:
        await drive(DeadlineLayer(slow, timeout=TIMEOUT), http_scope("GET"))
    assert raised.value.status == 504
    assert raised.value.code == "gateway_timeout"


async def test_slow_request_becomes_a_504_envelope() -> None:
    """Rendered by the envelope layer, the 504 names the deadline."""
    async with client(ErrorEnvelopeLayer(DeadlineLayer(slow, timeout=TIMEOUT))) as http:
        response = await http.get("/slow")
    assert response.status_code == 504
    [error] = response.json()["errors"]
    assert error["code"] == "gateway_timeout"
    assert error["title"] == "Gateway Timeout"
    assert error["details"] == (
        "The request exceeded the server-side deadline of 0.05 s."
        f" Quote Request-Id {response.headers['request-id']} to support."
    )


async def test_fast_request_is_untouched() -> None:
    """Under the deadline the app's response passes unchanged."""
    async with client(DeadlineLayer(EchoApp(), timeout=1)) as http:
        response = await http.post("/x", content=b"abcd")
    assert response.status_code == 200
    assert response.json() == {"received": 4}


async def test_deadline_after_the_response_started_is_logged_not_a_504(
    captured_logs: list[EventDict],
) -> None:
    """A started response cannot become a 504: the timeout propagates and is logged above."""

    async def stalls_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await drive(DeadlineLayer(stalls_mid_body, timeout=TIMEOUT), http_scope("GET"))

    app = ErrorEnvelopeLayer(DeadlineLayer(stalls_mid_body, timeout=TIMEOUT))
    response = await drive(app, http_scope("GET"))
    assert response.status == 200
    assert response.body == b"part"
    assert not response.complete
    [log] = [e for e in captured_logs if e["event"] == "exception after the response started"]
    assert isinstance(log["exc_info"], TimeoutError)


async def test_the_apps_own_timeout_error_is_not_renamed_504() -> None:
    """A TimeoutError raised by the app before the deadline is the app's error (500)."""

    async def times_out_itself(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("upstream")

    async with client(ErrorEnvelopeLayer(DeadlineLayer(times_out_itself, timeout=5))) as http:
        response = await http.get("/x")
    assert response.status_code == 500


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    """A zero or negative deadline is a configuration error."""
    with pytest.raises(ValueError, match="positive"):
        DeadlineLayer(EchoApp(), timeout=timeout)
