"""The in-process layer benchmark measures the pipeline as ``build_pipeline`` composes it."""

from __future__ import annotations

import pytest

from benchmarks import layers
from retrysafe.asgi import ASGIApp
from retrysafe.observability.metrics import Metrics
from retrysafe.pipeline import build_pipeline
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.service.app import pipeline_config
from retrysafe.service.scopes import RouteScopes
from retrysafe.settings import Settings
from retrysafe.stores.memory import MemoryIdempotencyStore


def _layer_types(app: object) -> list[type]:
    """The classes of the layers from ``app`` down to (not including) idempotency."""
    found = []
    while not isinstance(app, IdempotencyLayer):
        found.append(type(app))
        app = app.app  # type: ignore[attr-defined]
    return found


def test_the_benchmark_stacks_the_layers_in_build_pipelines_order() -> None:
    settings = Settings()
    pipeline = build_pipeline(
        layers.canned_replay,
        config=pipeline_config(settings),
        authenticator=layers.principal_for,
        idempotency_store=MemoryIdempotencyStore(),
        rate_limiter=RateLimiter.from_settings("10/second"),
        route_table=RouteScopes(layers.service_routes()),
        auth_failure_limiter=RateLimiter.from_settings("10/second"),
    )
    app: ASGIApp = layers.canned_replay
    for layer in layers.layers(settings, Metrics()):
        app = layer.wrap(app)
    benchmark_types = []
    while app is not layers.canned_replay:
        benchmark_types.append(type(app))
        app = app.app  # type: ignore[attr-defined]
    assert benchmark_types == _layer_types(pipeline)


async def test_every_layer_gets_a_figure_and_the_stack_answers_the_replay() -> None:
    costs = await layers.measure(requests=20, rounds=1)
    assert [cost.name for cost in costs] == [
        "innermost app (canned replay)",
        *(layer.name for layer in layers.layers(Settings(), Metrics())),
    ]
    # Every prefix of the stack was timed. Which costs more is not asserted: 20 requests
    # on a shared machine are a figure to read, not one to compare (a pause in the
    # innermost app's run once made it dearer than the whole stack).
    assert all(cost.cumulative > 0 for cost in costs)
    assert "| envelope |" in layers.table(costs)


async def test_a_stack_that_refuses_the_request_stops_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def nobody(_secret: str) -> None:
        return None

    monkeypatch.setattr(layers, "principal_for", nobody)
    with pytest.raises(RuntimeError, match="authentication answered 401"):
        await layers.measure(requests=5, rounds=1)


async def test_the_idempotency_layer_replays_from_the_memory_store() -> None:
    assert await layers.measure_replay(requests=20, rounds=1) > 0


async def test_the_served_stack_answers_the_canned_replay() -> None:
    from benchmarks import layer_stack_app

    for app in (layer_stack_app.stack, layer_stack_app.bare):
        answer = layers.Answer()
        await app(layers.request_scope(), layers.receive_body, answer)
        assert answer.status == 201
