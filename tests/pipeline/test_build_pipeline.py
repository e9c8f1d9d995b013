"""The composed pipeline: the lead's order from build_pipeline, checked through its effects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from retrysafe.asgi import ASGIApp
from retrysafe.pipeline import PipelineConfig, build_pipeline
from retrysafe.pipeline.authentication import AuthenticationLayer
from retrysafe.pipeline.body_limits import BodyLimitLayer
from retrysafe.pipeline.deadline import DeadlineLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.observation import ObservationLayer
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer
from retrysafe.pipeline.request_limits import RequestLimitLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer
from retrysafe.stores.memory import MemoryIdempotencyStore

from .asgi_apps import EchoApp, client

KEY = {"authorization": "Bearer good"}
PRINCIPAL = Principal("org_1", "key_1", frozenset())
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@dataclass
class Keys:
    asked: int = 0

    async def __call__(self, secret: str) -> Principal | None:
        self.asked += 1
        return PRINCIPAL if secret == "good" else None


def pipeline(routes: EchoApp, keys: Keys, *, rate: str = "3/minute", **settings: float) -> ASGIApp:
    return build_pipeline(
        routes,
        config=PipelineConfig(**settings),  # type: ignore[arg-type]
        authenticator=keys,
        idempotency_store=MemoryIdempotencyStore(),
        rate_limiter=RateLimiter.from_settings(rate),
    )


def test_layers_are_composed_in_the_spec_order() -> None:
    """Outermost first: envelope, observation, shedding, limits, rate limit, auth, idempotency…"""
    routes = EchoApp()
    node: object = pipeline(routes, Keys())
    order: list[type] = []
    while node is not routes:
        order.append(type(node))
        node = node.app  # type: ignore[attr-defined]
    assert order == [
        ErrorEnvelopeLayer,
        ObservationLayer,
        LoadSheddingLayer,
        RequestLimitLayer,
        BodyLimitLayer,
        RateLimitLayer,
        AuthenticationLayer,
        IdempotencyLayer,
        DeadlineLayer,
    ]


async def test_body_limit_answers_come_before_the_limiter_and_are_not_counted() -> None:
    """413 and 415 carry no RateLimit-* headers and use none of the budget."""
    keys = Keys()
    app = pipeline(EchoApp(), keys, max_body=10)
    async with client(app) as http:
        too_large = await http.post(
            "/x", content=b"1" * 11, headers={**KEY, "content-type": "application/json"}
        )
        wrong_type = await http.post(
            "/x", content=b"1", headers={**KEY, "content-type": "text/plain"}
        )
        ok = await http.get("/x", headers=KEY)
    assert too_large.status_code == 413
    assert wrong_type.status_code == 415
    for response in (too_large, wrong_type):
        assert response.headers["request-id"].startswith("req_")
        assert not any(name in response.headers for name in RATE_HEADERS)
    assert ok.headers["ratelimit-remaining"] == "2"
    assert keys.asked == 1


async def test_401_is_counted_and_carries_rate_limit_headers() -> None:
    """Authentication runs below the limiter: a wrong key uses budget and says so."""
    app = pipeline(EchoApp(), Keys())
    async with client(app) as http:
        response = await http.get("/x", headers={"authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.headers["ratelimit-limit"] == "3"
    assert response.headers["ratelimit-remaining"] == "2"


async def test_429_comes_before_authentication() -> None:
    """Past the limit the key is not even looked up."""
    keys = Keys()
    app = pipeline(EchoApp(), keys, rate="2/minute")
    async with client(app) as http:
        statuses = [(await http.get("/x", headers=KEY)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert keys.asked == 2


async def test_shed_503_comes_before_everything_and_carries_no_rate_limit_headers() -> None:
    """A shed request reaches neither limiter nor authentication."""
    routes, keys = EchoApp(), Keys()
    routes.held.expected = 1
    app = pipeline(routes, keys, max_in_flight=1)
    async with client(app) as http, asyncio.TaskGroup() as tg:
        held = tg.create_task(http.get("/held", headers=KEY))
        await asyncio.wait_for(routes.held.all_started.wait(), timeout=5)
        shed = await http.get("/x", headers=KEY)
        routes.held.release.set()
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["request-id"].startswith("req_")
    assert not any(name in shed.headers for name in RATE_HEADERS)
    assert keys.asked == 1
    assert held.result().headers["ratelimit-remaining"] == "2"


async def test_health_skips_limiter_and_authentication() -> None:
    """/health needs no key, is never limited, and still has a Request-Id."""
    keys = Keys()
    app = pipeline(EchoApp(), keys, rate="1/minute")
    async with client(app) as http:
        responses = [await http.get("/health") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.headers["request-id"].startswith("req_") for r in responses)
    assert not any(name in r.headers for r in responses for name in RATE_HEADERS)
    assert keys.asked == 0


async def test_deadline_504_is_an_envelope_with_rate_limit_headers() -> None:
    """The handler's deadline becomes a 504 envelope for a request the limiter counted."""
    app = pipeline(EchoApp(), Keys(), request_timeout=0.05)
    async with client(app) as http:
        response = await http.get("/slow", headers=KEY)
    assert response.status_code == 504
    assert response.json()["errors"][0]["code"] == "gateway_timeout"
    assert response.headers["ratelimit-remaining"] == "2"


async def test_streamed_413_is_answered_above_the_limiter_and_not_recorded() -> None:
    """A chunked body past the limit while the idempotency layer buffers it: a plain 413.

    The retry with the same key and a smaller body executes instead of replaying the 413.
    """
    routes = EchoApp()
    app = pipeline(routes, Keys(), max_body=10)
    headers = {**KEY, "content-type": "application/json", "idempotency-key": "k-413"}

    async def oversized() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"12345"

    async with client(app) as http:
        too_large = await http.post("/x", content=oversized(), headers=headers)
        retried = await http.post("/x", content=b"{}", headers=headers)
    assert too_large.status_code == 413
    assert too_large.json()["errors"][0]["code"] == "payload_too_large"
    assert not any(name in too_large.headers for name in RATE_HEADERS)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert routes.completed == 1
