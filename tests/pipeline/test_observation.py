"""The observation layer: one record per answer, whoever gave it, as log line, metrics and sink."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from structlog.typing import EventDict

from retrysafe.asgi import ASGIApp
from retrysafe.database.engine import DatabaseUnavailable
from retrysafe.envelope import ApiError
from retrysafe.observability import Metrics, RequestRecord
from retrysafe.pipeline import build_pipeline
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.service.app import pipeline_config
from retrysafe.settings import Settings
from retrysafe.stores.memory import MemoryIdempotencyStore

from .asgi_apps import EchoApp, RaisingApp, client

SECRET = "s3cret-key"
KEY = {"authorization": f"Bearer {SECRET}"}
PRINCIPAL = Principal("org_1", "key_1", frozenset())
LOG_FIELDS = {
    "event",
    "log_level",
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "organization_id",
    "api_key_id",
    "idempotency_key",
    "outcome",
    "rate_limit",
    "code",
}


@dataclass
class Keys:
    async def __call__(self, secret: str) -> Principal | None:
        return PRINCIPAL if secret == SECRET else None


@dataclass
class Sink:
    records: list[RequestRecord] = field(default_factory=list)

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)


def logged_echo() -> EchoApp:
    """Echoes the body's size (and a password the log must not show) with a 201; /missing is 404."""
    return EchoApp(201, {"password": "hunter2"})


def observed(
    app: ASGIApp,
    *,
    rate: str = "100/minute",
    sink: Sink | None = None,
    metrics: Metrics | None = None,
    **settings: object,
) -> tuple[ASGIApp, Metrics, Sink]:
    metrics = metrics or Metrics()
    sink = sink if sink is not None else Sink()
    pipeline = build_pipeline(
        app,
        config=pipeline_config(Settings(**settings)),  # type: ignore[arg-type]
        authenticator=Keys(),
        idempotency_store=MemoryIdempotencyStore(),
        rate_limiter=RateLimiter.from_settings(rate),
        metrics=metrics,
        api_log_sink=sink,
        api_log_paths=lambda path: path != "/health",
    )
    return pipeline, metrics, sink


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def requests(metrics: Metrics, status: int, route: str = "unmatched", method: str = "GET") -> float:
    return sample(
        metrics, "retrysafe_http_requests_total", method=method, route=route, status=str(status)
    )


def request_events(logs: list[EventDict]) -> list[EventDict]:
    return [event for event in logs if event["event"] == "request"]


async def test_every_answer_is_recorded_whoever_gave_it() -> None:
    """200, 401, 429, 413 and a shed 503 each leave one record, counted by status."""
    echo = logged_echo()
    echo.held.expected = 1
    # The wrong key has a budget of its own: 2/minute is spent by the 201 and the held 200.
    app, metrics, sink = observed(echo, rate="2/minute", max_body=10, max_in_flight=1)
    async with client(app) as http:
        ok = await http.post("/x", json={}, headers=KEY)
        unauthenticated = await http.get("/x", headers={"authorization": "Bearer wrong"})
        too_large = await http.post(
            "/x", content=b"1" * 11, headers={**KEY, "content-type": "application/json"}
        )
        async with asyncio.TaskGroup() as tasks:
            held = tasks.create_task(http.get("/held", headers=KEY))
            await asyncio.wait_for(echo.held.all_started.wait(), timeout=5)
            shed = await http.get("/x", headers=KEY)
            echo.held.release.set()
        limited = await http.get("/x", headers=KEY)
    answers = [ok, unauthenticated, too_large, shed, held.result(), limited]
    assert [r.status_code for r in answers] == [201, 401, 413, 503, 200, 429]
    by_request_id = {record.request_id: record for record in sink.records}
    for response in answers:
        record = by_request_id[response.headers["request-id"]]
        assert record.status == response.status_code
    assert requests(metrics, 201, method="POST") == 1
    assert requests(metrics, 401) == 1
    assert requests(metrics, 413, method="POST") == 1
    assert requests(metrics, 503) == 1
    assert requests(metrics, 429) == 1
    assert sample(metrics, "retrysafe_shed_total") == 1
    assert sample(metrics, "retrysafe_rate_limited_total") == 1
    assert by_request_id[ok.headers["request-id"]].rate_limit == "allowed"
    assert by_request_id[limited.headers["request-id"]].rate_limit == "limited"
    assert by_request_id[limited.headers["request-id"]].error_code == "rate_limited"
    assert by_request_id[shed.headers["request-id"]].rate_limit is None
    assert by_request_id[ok.headers["request-id"]].organization_id == "org_1"
    assert by_request_id[unauthenticated.headers["request-id"]].organization_id is None


async def test_idempotency_outcomes_are_recorded_and_counted() -> None:
    """executed, replayed, mismatch, in_flight; a key turned away by a 401 is not_recorded."""
    echo = logged_echo()
    echo.held.expected = 1
    app, metrics, sink = observed(echo)
    key = {**KEY, "idempotency-key": "k-1"}
    async with client(app) as http:
        executed = await http.post("/x", json={"a": 1}, headers=key)
        replayed = await http.post("/x", json={"a": 1}, headers=key)
        mismatch = await http.post("/x", json={"a": 2}, headers=key)
        async with asyncio.TaskGroup() as tasks:
            held_key = {**KEY, "idempotency-key": "k-held"}
            first = tasks.create_task(http.post("/held", json={}, headers=held_key))
            await asyncio.wait_for(echo.held.all_started.wait(), timeout=5)
            in_flight = await http.post("/held", json={}, headers=held_key)
            echo.held.release.set()
        refused = await http.post(
            "/x", json={}, headers={"authorization": "Bearer wrong", "idempotency-key": "k-2"}
        )
        no_key = await http.post("/x", json={}, headers=KEY)
    outcomes = {record.request_id: record.outcome for record in sink.records}
    expected = {
        executed: "executed",
        replayed: "replayed",
        mismatch: "mismatch",
        in_flight: "in_flight",
        first.result(): "executed",
        refused: "not_recorded",
        no_key: None,
    }
    for response, outcome in expected.items():
        assert outcomes[response.headers["request-id"]] == outcome
    assert in_flight.status_code == 409
    for outcome, count in [("executed", 2), ("replayed", 1), ("mismatch", 1), ("in_flight", 1)]:
        assert sample(metrics, "retrysafe_idempotency_requests_total", outcome=outcome) == count
    assert sample(metrics, "retrysafe_idempotency_records_stored_total") == 2


async def test_the_log_line_names_the_request_and_nothing_secret(
    captured_logs: list[EventDict],
) -> None:
    """One event per request with the agreed fields; no key, no header, no body in it."""
    app, _, _ = observed(logged_echo())
    async with client(app) as http:
        response = await http.post(
            "/x", json={"name": "Ada Lovelace"}, headers={**KEY, "idempotency-key": "k-log"}
        )
    [event] = request_events(captured_logs)
    assert set(event) == LOG_FIELDS
    assert event["request_id"] == response.headers["request-id"]
    assert event["status"] == 201
    assert event["method"] == "POST"
    assert event["path"] == "/x"
    assert event["organization_id"] == "org_1"
    assert event["api_key_id"] == "key_1"
    assert event["idempotency_key"] == "k-log"
    assert event["outcome"] == "executed"
    assert event["rate_limit"] == "allowed"
    assert event["log_level"] == "info"
    assert event["duration_ms"] >= 0
    text = json.dumps(event)
    assert SECRET not in text
    assert "Ada Lovelace" not in text
    assert "hunter2" not in text


async def test_health_and_metrics_log_at_debug(captured_logs: list[EventDict]) -> None:
    """Probes and scrapes would drown the request log at info."""
    app, _, _ = observed(logged_echo())
    async with client(app) as http:
        await http.get("/health")
    [event] = request_events(captured_logs)
    assert event["log_level"] == "debug"


@pytest.mark.parametrize(
    ("error", "status", "code", "dependency"),
    [
        (ApiError(409, "duplicate_resource", "taken"), 409, "duplicate_resource", None),
        (DatabaseUnavailable("down"), 503, "service_unavailable", "database"),
        (RuntimeError("boom"), 500, "internal_error", None),
    ],
)
async def test_an_exception_is_recorded_with_the_status_the_envelope_gives_it(
    error: Exception, status: int, code: str, dependency: str | None
) -> None:
    """The layer predicts the envelope's answer with its own builders; this keeps them agreeing."""
    app, metrics, sink = observed(RaisingApp(error))
    async with client(app) as http:
        response = await http.get("/x", headers=KEY)
    [record] = sink.records
    assert response.status_code == record.status == status
    assert response.json()["errors"][0]["code"] == record.error_code == code
    database_errors = sample(metrics, "retrysafe_dependency_errors_total", dependency="database")
    assert database_errors == (1 if dependency == "database" else 0)


async def test_route_templates_label_requests_answered_before_routing() -> None:
    """A 401 is labelled with the route it was for; an unknown path with 'unmatched'."""

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    routed = Starlette(routes=[Route("/items/{item_id}", item)])
    app, metrics, _ = observed(routed)
    async with client(app) as http:
        assert (await http.get("/items/a", headers=KEY)).status_code == 200
        assert (await http.get("/items/b", headers=KEY)).status_code == 200
        assert (await http.get("/items/c")).status_code == 401
        assert (await http.get("/nowhere/1", headers=KEY)).status_code == 404
    assert requests(metrics, 200, route="/items/{item_id}") == 2
    assert requests(metrics, 401, route="/items/{item_id}") == 1
    assert requests(metrics, 404) == 1
    histogram = sample(
        metrics,
        "retrysafe_http_request_duration_seconds_count",
        method="GET",
        route="/items/{item_id}",
    )
    assert histogram == 3


async def test_bodies_are_kept_for_the_sink_only_when_asked() -> None:
    """With api_log_bodies both bodies go to the sink, capped at the limit; without, none."""
    for bodies, limit in ((False, 8192), (True, 8192), (True, 5)):
        app, _, sink = observed(logged_echo(), api_log_bodies=bodies, api_log_body_limit=limit)
        async with client(app) as http:
            await http.post("/x", json={"name": "Ada"}, headers=KEY)
        [record] = sink.records
        if not bodies:
            assert record.request_body is None
            assert record.response_body is None
            continue
        assert record.request_content_type == "application/json"
        assert record.response_content_type == "application/json"
        request_body = b'{"name":"Ada"}'
        # One byte past the limit is kept, so the writer can tell the body was cut.
        assert record.request_body == request_body[: limit + 1]
        assert record.response_body is not None
        assert record.response_body.startswith(b'{"received": 14'[: limit + 1])


async def test_paths_the_predicate_refuses_do_not_reach_the_sink() -> None:
    app, _, sink = observed(logged_echo())
    async with client(app) as http:
        await http.get("/health")
        await http.get("/x", headers=KEY)
    assert [record.path for record in sink.records] == ["/x"]


async def test_a_failing_sink_never_costs_the_client_its_answer(
    captured_logs: list[EventDict],
) -> None:
    class BrokenSink(Sink):
        def submit(self, record: RequestRecord) -> None:
            raise RuntimeError("sink down")

    app, _, _ = observed(logged_echo(), sink=BrokenSink())
    async with client(app) as http:
        response = await http.post("/x", json={}, headers=KEY)
    assert response.status_code == 201
    assert any(event["event"] == "observation_failed" for event in captured_logs)


async def test_the_error_code_of_a_handler_answer_is_read_from_its_body() -> None:
    app, _, sink = observed(logged_echo())
    async with client(app) as http:
        await http.post("/missing", json={}, headers=KEY)
    [record] = sink.records
    assert record.status == 404
    assert record.error_code == "not_found"
