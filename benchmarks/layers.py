"""CPU per request of each pipeline layer, in-process: canned ASGI messages, no sockets.

    python benchmarks/layers.py [--requests 20000] [--rounds 7] [--log-level warning]

wrk on a shared 2-core machine moves by ±15 % between runs; this does not need
the network, a server or a database, so it resolves a few microseconds. The
layers are stacked from the inside out in the order of ``build_pipeline`` and
every prefix of that stack is timed (process CPU time, sequential requests on
one uvloop event loop); a layer's cost is its stack's time minus the time of the
stack inside it. Rounds alternate the stacks and each stack keeps its fastest
round, so a burst of other work on the machine touches no layer more than
another. Every stack must give the canned request the answer the real service
would (a 201), or the run stops: a layer refusing the request would look cheap.

The innermost app stands for the idempotency layer's replay: it reads the body
and answers a canned 201, so the figures are the layers' own cost, without the
store (perf-core's part). ``replay (memory store)`` adds the real idempotency
layer with a memory store holding the replayed record.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog
from starlette.routing import BaseRoute

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send
from retrysafe.log_config import configure_structlog
from retrysafe.observability.api_log_writer import ApiLogWriter
from retrysafe.observability.metrics import Metrics
from retrysafe.observability.records import RequestRecord
from retrysafe.pipeline import METRICS_PATH
from retrysafe.pipeline.authentication import (
    DEFAULT_PUBLIC_PATHS,
    AuthenticationLayer,
    FailedAuthentications,
)
from retrysafe.pipeline.authorization import AuthorizationLayer
from retrysafe.pipeline.body_limits import BodyLimitLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.observation import ObservationLayer
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer
from retrysafe.pipeline.request_limits import RequestLimitLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer
from retrysafe.settings import Settings
from retrysafe.stores.memory import MemoryIdempotencyStore

SECRET = "rs_bench_secret"  # noqa: S105 - a benchmark key, never a credential
BODY = b'{"data":{"attributes":{"name_first":"Ada","reference_id":"replayed"}}}'
REPLAYED = (
    b'{"data":{"type":"account","id":"act_0123456789abcdef01234567","attributes":'
    b'{"reference_id":"replayed","name_first":"Ada"}}}'
)
_UNTHROTTLED = frozenset({"/health", METRICS_PATH})


def request_scope(secret: str = SECRET, key: str = "bench-replay", body: bytes = BODY) -> Scope:
    """What uvicorn hands the app for one of create.lua's requests (MODE=same by default)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/api/v1/accounts",
        "raw_path": b"/api/v1/accounts",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {secret}".encode()),
            (b"idempotency-key", key.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }


async def receive_body() -> Message:
    return {"type": "http.request", "body": BODY, "more_body": False}


class Answer:
    """The ``send`` of one request: keeps the status, to check what the stack answered."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def canned_replay(scope: Scope, receive: Receive, send: Send) -> None:
    """The idempotency layer's replay, without its store: read the body, send the record."""
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-length", str(len(REPLAYED)).encode()),
                (b"content-type", b"application/json"),
                (b"location", b"/api/v1/accounts/act_0123456789abcdef01234567"),
                (b"idempotent-replayed", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REPLAYED})


async def principal_for(secret: str) -> Principal | None:
    """The authenticator, without its database read (perf-core's part)."""
    if secret != SECRET:
        return None
    return Principal("org_bench", "key_bench", frozenset({"accounts:write", "accounts:read"}))


@functools.cache
def service_routes() -> Sequence[BaseRoute]:
    """The reference service's routes (its handler app, built and never started).

    The authorization layer matches them before the idempotency layer, and the
    observation layer matches a replay's path against them for its route label.
    """
    from retrysafe.database import Database
    from retrysafe.service.app import create_api

    directory = tempfile.mkdtemp(prefix="rs-layers-")
    settings = Settings(database_url=f"sqlite:///{directory}/unused.db")
    return tuple(create_api(Database(settings.database_url), settings).routes)


class DrainedApiLog(ApiLogWriter):
    """The service's API-log writer, its buffer emptied now and then instead of written.

    ``submit`` is what a request pays (an id and an append); the inserts happen
    in a background task that is not part of a request's cost. Emptying the
    buffer keeps it below its capacity, past which ``submit`` takes the cheaper
    path of dropping the entry.
    """

    def submit(self, record: RequestRecord) -> None:
        super().submit(record)
        if self.pending >= 1000:
            self._buffer.clear()


def api_log(metrics: Metrics) -> DrainedApiLog:
    from retrysafe.database import Database

    directory = tempfile.mkdtemp(prefix="rs-layers-")
    return DrainedApiLog(Database(f"sqlite:///{directory}/unused.db"), metrics)


@dataclass(frozen=True)
class Layer:
    name: str
    wrap: Callable[[ASGIApp], ASGIApp]


def layers(settings: Settings, metrics: Metrics) -> list[Layer]:
    """The layers above idempotency, innermost first, in ``build_pipeline``'s order."""
    limiter = RateLimiter.from_settings("1000000/second")
    failures = FailedAuthentications(RateLimiter.from_settings(settings.auth_failure_limit))
    from retrysafe.service.scopes import RouteScopes

    routes = RouteScopes(service_routes())
    return [
        Layer("authorization", lambda app: AuthorizationLayer(app, routes=routes)),
        Layer(
            "authentication",
            lambda app: AuthenticationLayer(
                app,
                authenticator=principal_for,
                public_paths=DEFAULT_PUBLIC_PATHS | {METRICS_PATH},
                failures=failures,
            ),
        ),
        Layer(
            "rate limit",
            lambda app: RateLimitLayer(app, limiter=limiter, exempt_paths=_UNTHROTTLED),
        ),
        Layer(
            "body limits",
            lambda app: BodyLimitLayer(
                app, max_body=settings.max_body, max_upload=settings.max_upload
            ),
        ),
        Layer(
            "request limits",
            lambda app: RequestLimitLayer(
                app,
                max_header_bytes=settings.max_header_bytes,
                max_query_bytes=settings.max_query_bytes,
            ),
        ),
        Layer(
            "load shedding",
            lambda app: LoadSheddingLayer(
                app, max_in_flight=settings.max_in_flight, exempt_paths=_UNTHROTTLED
            ),
        ),
        Layer(
            "observation",
            lambda app: ObservationLayer(
                app,
                metrics=metrics,
                sink=api_log(metrics),
                recorded=lambda path: path.startswith("/api/v1/"),
                routes=service_routes(),
            ),
        ),
        Layer("envelope", ErrorEnvelopeLayer),
    ]


async def _drive(app: ASGIApp, requests: int) -> tuple[float, int]:
    """CPU seconds for ``requests`` sequential requests, and the last answer's status."""
    answer = Answer()
    gc.collect()
    started = time.process_time()
    for _ in range(requests):
        await app(request_scope(), receive_body, answer)
    return time.process_time() - started, answer.status


async def _replay_store() -> IdempotencyLayer:
    """The real idempotency layer over a memory store that holds the replayed record."""
    store = MemoryIdempotencyStore()
    layer = IdempotencyLayer(canned_replay, store=store, ttl=86400, scoped_above=True)
    # The first request executes (canned_replay is the "handler") and is recorded.
    scope = request_scope()
    scope["state"]["retrysafe.principal"] = await principal_for(SECRET)
    await layer(scope, receive_body, Answer())
    return layer


@dataclass(frozen=True)
class LayerCost:
    name: str
    microseconds: float
    """CPU µs per request this layer adds to the stack inside it."""
    cumulative: float
    """CPU µs per request of the stack up to and including this layer."""


def configure_logs(level: str, output: TextIO) -> None:
    """The server's structlog set-up at ``level``, its lines written to ``output``."""
    configure_structlog(level)
    # Rendered as in the server, then written where they cost no terminal.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(output))


async def measure(*, requests: int, rounds: int) -> list[LayerCost]:
    """Time every prefix of the stack; see the module docstring."""
    settings = Settings()
    metrics = Metrics()
    stacks: list[tuple[str, ASGIApp]] = [("innermost app (canned replay)", canned_replay)]
    app: ASGIApp = canned_replay
    for layer in layers(settings, metrics):
        app = layer.wrap(app)
        stacks.append((layer.name, app))
    best = [float("inf")] * len(stacks)
    for _ in range(rounds):
        for index, (name, stack) in enumerate(stacks):
            seconds, status = await _drive(stack, requests)
            if status != 201:
                raise RuntimeError(f"the stack up to {name} answered {status}, not 201")
            best[index] = min(best[index], seconds)
    per_request = [1e6 * seconds / requests for seconds in best]
    costs = [LayerCost(stacks[0][0], per_request[0], per_request[0])]
    for index in range(1, len(stacks)):
        costs.append(
            LayerCost(
                stacks[index][0], per_request[index] - per_request[index - 1], per_request[index]
            )
        )
    return costs


async def measure_replay(*, requests: int, rounds: int) -> float:
    """CPU µs per request of the idempotency layer replaying from a memory store."""
    layer = await _replay_store()
    principal = await principal_for(SECRET)

    async def with_principal(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["retrysafe.principal"] = principal
        await layer(scope, receive, send)

    best = float("inf")
    for _ in range(rounds):
        seconds, status = await _drive(with_principal, requests)
        if status != 201:
            raise RuntimeError(f"the idempotency layer answered {status}, not 201")
        best = min(best, seconds)
    return 1e6 * best / requests


def table(costs: Sequence[LayerCost], replay_us: float | None = None) -> str:
    lines = ["| layer (innermost first) | CPU µs/request | stack up to it |", "|---|--:|--:|"]
    for cost in costs:
        lines.append(f"| {cost.name} | {cost.microseconds:.1f} | {cost.cumulative:.1f} |")
    if replay_us is not None:
        lines.append(f"| idempotency layer, replay from a memory store | {replay_us:.1f} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per stack and round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each stack keeps its best")
    parser.add_argument("--log-level", default="warning", help="structlog level (info logs lines)")
    args = parser.parse_args(argv)
    import uvloop

    async def run() -> tuple[list[LayerCost], float]:
        costs = await measure(requests=args.requests, rounds=args.rounds)
        return costs, await measure_replay(requests=args.requests, rounds=args.rounds)

    with open(os.devnull, "w") as devnull:
        configure_logs(args.log_level, devnull)
        costs, replay_us = uvloop.run(run())
    print(table(costs, replay_us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
