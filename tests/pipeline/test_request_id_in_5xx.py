"""Every 5xx body names the Request-Id (SPEC §1), whichever layer answers it."""

from __future__ import annotations

import asyncio

from retrysafe.asgi import Receive, Scope, Send
from retrysafe.database.engine import DatabaseUnavailable
from retrysafe.envelope import ApiError, database_unavailable, naming_request
from retrysafe.pipeline.deadline import DeadlineLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer

from .asgi_apps import client, send_json


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(5)
    await send_json(send, 200, {})


async def unreachable_database(scope: Scope, receive: Receive, send: Send) -> None:
    raise DatabaseUnavailable("connection refused")


def test_a_5xx_gains_the_request_id_and_a_4xx_does_not() -> None:
    named = naming_request(database_unavailable(), "req_1")
    assert named.errors[0].details.endswith("Quote Request-Id req_1 to support.")
    assert named.headers == {"Retry-After": "1"}
    assert naming_request(named, "req_1") is named  # already named: unchanged
    not_found = ApiError(404, "not_found", "No such account.")
    assert naming_request(not_found, "req_1") is not_found


async def _details_and_request_id(app: object, path: str) -> tuple[int, str, str]:
    async with client(ErrorEnvelopeLayer(app)) as http:  # type: ignore[arg-type]
        response = await http.get(path)
    return (
        response.status_code,
        response.json()["errors"][0]["details"],
        response.headers["request-id"],
    )


async def test_the_deadline_504_names_the_request_id() -> None:
    status, details, request_id = await _details_and_request_id(
        DeadlineLayer(slow, timeout=0.05), "/slow"
    )
    assert status == 504
    assert request_id in details


async def test_a_shed_503_names_the_request_id() -> None:
    release = asyncio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await send_json(send, 200, {})

    app = ErrorEnvelopeLayer(LoadSheddingLayer(held, max_in_flight=1, exempt_paths=frozenset()))
    async with client(app) as http:
        first = asyncio.create_task(http.get("/held"))
        await asyncio.sleep(0.05)
        shed = await http.get("/any")
        release.set()
        assert (await first).status_code == 200
    assert shed.status_code == 503
    assert shed.headers["request-id"] in shed.json()["errors"][0]["details"]


async def test_a_database_503_names_the_request_id() -> None:
    status, details, request_id = await _details_and_request_id(unreachable_database, "/any")
    assert status == 503
    assert request_id in details
