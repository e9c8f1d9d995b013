"""The recovery handle a handler gets from the idempotency layer, in the full pipeline.

A small app of a user's own checkpoints through ``recovery_of(request)``; the
store is the memory store with a fake clock, so a lease runs out when the test
says so. What is checked: the handle's values on a fresh and on a resumed
request, the handle without an Idempotency-Key, and that a holder whose record
was taken over answers 409 and records nothing (the taker's answer stands).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.support.clock import Clock

from retrysafe.idempotency.recovery import lease_seconds, recovery_of
from retrysafe.pipeline import PipelineConfig, build_pipeline
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.stores.memory import MemoryIdempotencyStore

LEASE = 30.0
PRINCIPAL = Principal("org_a", "key_a", frozenset())


@dataclass
class Harness:
    client: httpx.AsyncClient
    clock: Clock
    seen: list[dict[str, object]] = field(default_factory=list)
    checkpointed: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def make_app(box: list[Harness]) -> Starlette:
    async def work(request: Request) -> Response:
        """Resumes at its point; ``hold`` makes it wait after its first checkpoint."""
        harness = box[0]
        options = await request.json()
        recovery = recovery_of(request)
        assert recovery_of(request) is recovery
        harness.seen.append(
            {
                "point": recovery.point,
                "data": recovery.data,
                "external_key": recovery.external_key,
                "durable": recovery.durable,
            }
        )
        if recovery.point is None:
            await recovery.checkpoint("called", {"answer": [1, 2]})
            harness.checkpointed.set()
            if options.get("hold"):
                await harness.release.wait()
            if options.get("checkpoint_again"):
                await recovery.checkpoint("finished", None)
        return JSONResponse({"point": recovery.point, "data": recovery.data}, status_code=201)

    return Starlette(routes=[Route("/work", work, methods=["POST"])])


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = Clock()
    box: list[Harness] = []

    async def authenticate(secret: str) -> Principal | None:
        return PRINCIPAL if secret == "key" else None

    app = build_pipeline(
        make_app(box),
        config=PipelineConfig(),
        authenticator=authenticate,
        idempotency_store=MemoryIdempotencyStore(lease_seconds=LEASE),
        rate_limiter=RateLimiter.from_settings("1000/second"),
        clock=clock,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        headers={"Authorization": "Bearer key"},
    )
    box.append(Harness(client, clock))
    try:
        yield box[0]
    finally:
        await client.aclose()


async def post(h: Harness, key: str | None, **options: object) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await h.client.post("/work", json=options, headers=headers)


async def test_a_fresh_request_starts_nowhere_and_its_checkpoint_moves_the_handle(
    harness: Harness,
) -> None:
    response = await post(harness, "k1")
    assert response.status_code == 201
    assert response.json() == {"point": "called", "data": {"answer": [1, 2]}}
    [seen] = harness.seen
    assert (seen["point"], seen["data"], seen["durable"]) == (None, None, True)
    assert isinstance(seen["external_key"], str)
    assert len(seen["external_key"]) == 32


async def test_without_a_key_the_handle_is_not_durable_and_its_external_key_is_new(
    harness: Harness,
) -> None:
    assert (await post(harness, None)).status_code == 201
    assert (await post(harness, None)).status_code == 201
    first, second = harness.seen
    assert first["durable"] is False
    assert first["external_key"] != second["external_key"]
    assert first["point"] is second["point"] is None


async def test_a_taken_over_holder_answers_409_and_the_takers_answer_stands(
    harness: Harness,
) -> None:
    """The slow holder's 201 would contradict the record: it gets 409, records nothing."""
    slow = asyncio.create_task(post(harness, "k1", hold=True))
    await harness.checkpointed.wait()
    harness.clock.now += LEASE + 1  # the slow holder's lease ran out
    taker = await post(harness, "k1", hold=True)
    assert taker.status_code == 201
    resumed = harness.seen[1]
    assert resumed["point"] == "called"
    assert resumed["data"] == {"answer": [1, 2]}
    assert resumed["external_key"] == harness.seen[0]["external_key"]
    harness.release.set()
    lost = await slow
    assert lost.status_code == 409
    assert lost.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert int(lost.headers["retry-after"]) >= 1
    replay = await post(harness, "k1", hold=True)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == taker.content


async def test_a_checkpoint_after_a_take_over_is_refused_with_409(harness: Harness) -> None:
    slow = asyncio.create_task(post(harness, "k1", hold=True, checkpoint_again=True))
    await harness.checkpointed.wait()
    harness.clock.now += LEASE + 1
    assert (await post(harness, "k1", hold=True, checkpoint_again=True)).status_code == 201
    harness.release.set()
    lost = await slow
    assert lost.status_code == 409


def test_a_lease_outlasts_the_request_deadline() -> None:
    """A holder the deadline has not cancelled yet is never fenced off by its own lease."""
    for timeout in (0.5, 30.0, 600.0):
        assert lease_seconds(timeout) > timeout
