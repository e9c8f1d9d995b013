"""LoadSheddingLayer: with N requests in flight the next one is shed with 503, /health never."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer

from .asgi_apps import EchoApp, HeldApp, RaisingApp, client

MAX_IN_FLIGHT = 3


async def _saturate(
    http: httpx.AsyncClient, held: HeldApp, tg: asyncio.TaskGroup
) -> list[asyncio.Task[httpx.Response]]:
    held.expected = MAX_IN_FLIGHT
    tasks = [tg.create_task(http.get(f"/slow/{i}")) for i in range(MAX_IN_FLIGHT)]
    await asyncio.wait_for(held.all_started.wait(), timeout=5)
    return tasks


async def test_request_past_max_in_flight_is_shed_with_503() -> None:
    """N held requests fill the process; the next gets 503 + Retry-After and never runs."""
    held = HeldApp()
    shedding = LoadSheddingLayer(held, max_in_flight=MAX_IN_FLIGHT)
    async with client(ErrorEnvelopeLayer(shedding)) as http, asyncio.TaskGroup() as tg:
        tasks = await _saturate(http, held, tg)
        assert shedding.in_flight == MAX_IN_FLIGHT

        shed = await http.post("/accounts", json={"data": {}})

        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.headers["request-id"].startswith("req_")
        assert "ratelimit-limit" not in shed.headers
        [error] = shed.json()["errors"]
        assert error["code"] == "service_unavailable"
        assert error["status"] == "503"
        assert f"{MAX_IN_FLIGHT} requests in flight" in error["details"]
        assert held.started == MAX_IN_FLIGHT  # the shed request never reached the app
        held.release.set()
    assert [t.result().status_code for t in tasks] == [200] * MAX_IN_FLIGHT
    assert shedding.in_flight == 0


async def test_capacity_returns_once_requests_finish() -> None:
    """After the held requests complete, new requests are served again."""
    held = HeldApp()
    shedding = LoadSheddingLayer(held, max_in_flight=MAX_IN_FLIGHT)
    async with client(shedding) as http:
        async with asyncio.TaskGroup() as tg:
            await _saturate(http, held, tg)
            assert (await http.get("/x")).status_code == 503
            held.release.set()
        assert (await http.get("/x")).status_code == 200


async def test_health_is_never_shed_and_never_counted() -> None:
    """A saturated process still answers /health, and /health does not use a slot."""
    held = HeldApp()
    shedding = LoadSheddingLayer(held, max_in_flight=MAX_IN_FLIGHT)
    async with client(shedding) as http, asyncio.TaskGroup() as tg:
        tasks = await _saturate(http, held, tg)
        health = tg.create_task(http.get("/health"))
        await asyncio.sleep(0.01)
        assert shedding.in_flight == MAX_IN_FLIGHT  # /health is in flight but not counted
        held.release.set()
    assert health.result().status_code == 200
    assert all(t.result().status_code == 200 for t in tasks)


async def test_slot_is_released_when_the_app_raises() -> None:
    """A failing request gives its slot back, so errors cannot leak capacity."""
    shedding = LoadSheddingLayer(RaisingApp(RuntimeError("boom")), max_in_flight=1)
    async with client(ErrorEnvelopeLayer(shedding)) as http:
        for _ in range(3):
            assert (await http.get("/x")).status_code == 500
    assert shedding.in_flight == 0


async def test_requests_under_the_limit_pass_through() -> None:
    """Below the limit the app's response is untouched."""
    async with client(LoadSheddingLayer(EchoApp(), max_in_flight=1)) as http:
        response = await http.post("/x", content=b"abc")
    assert response.status_code == 200
    assert response.json() == {"received": 3}


def test_max_in_flight_must_be_positive() -> None:
    """Zero capacity would shed everything; it is a configuration error."""
    with pytest.raises(ValueError, match="max_in_flight"):
        LoadSheddingLayer(EchoApp(), max_in_flight=0)
