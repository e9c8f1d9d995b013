"""The request pipeline: pure ASGI layers, ordered in exactly one place (:func:`build_pipeline`)."""

from __future__ import annotations

from collections.abc import Callable

from retrysafe.asgi import ASGIApp, Scope
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.observability.metrics import Metrics
from retrysafe.observability.records import ApiLogSink
from retrysafe.pipeline.authentication import (
    DEFAULT_PUBLIC_PATHS,
    AuthenticationLayer,
    Authenticator,
    FailedAuthentications,
)
from retrysafe.pipeline.authorization import AuthorizationLayer, RouteTable
from retrysafe.pipeline.body_limits import BodyLimitLayer
from retrysafe.pipeline.deadline import DeadlineLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.observation import ObservationLayer
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer
from retrysafe.pipeline.request_limits import RequestLimitLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer
from retrysafe.settings import Settings

__all__ = ["METRICS_PATH", "build_pipeline"]

METRICS_PATH = "/metrics"
"""Like ``/health``, never shed, rate limited or authenticated: a scraper must get through."""

_UNTHROTTLED = frozenset({"/health", METRICS_PATH})


def _no_api_log(_path: str) -> bool:
    return False


def build_pipeline(
    app: ASGIApp,
    *,
    settings: Settings,
    authenticator: Authenticator,
    idempotency_store: IdempotencyStore,
    rate_limiter: RateLimiter,
    clock: Callable[[], float] | None = None,
    metrics: Metrics | None = None,
    api_log_sink: ApiLogSink | None = None,
    api_log_paths: Callable[[str], bool] = _no_api_log,
    public_paths: frozenset[str] = DEFAULT_PUBLIC_PATHS,
    route_table: RouteTable | None = None,
    auth_failure_limiter: RateLimiter | None = None,
    deferrable: Callable[[Scope], bool] | None = None,
) -> ASGIApp:
    """Wrap ``app`` in the SPEC §2 order; this function *is* the architecture diagram.

    Read bottom-up: the handler runs inside a deadline, inside the idempotency
    layer, which only ever sees authenticated, rate-limited, size-checked requests.
    Because rate limiting and authentication sit outside idempotency, a 429 or a
    401 is never recorded, and neither is a 413/415 or a shed 503. Observation
    sits just inside the envelope, so it sees every answer, those included; the
    requests ``api_log_paths`` accepts also go to ``api_log_sink``. Given
    ``route_table``, an unknown route (404/405) or a key without the endpoint's
    scope (403) is answered above idempotency too, so never recorded or replayed.
    Given ``auth_failure_limiter``, failed authentications are counted per client
    address and an address past it gets 429 before its key is looked up.
    Requests ``deferrable`` accepts have their idempotency claim deferred to their
    commit (see :class:`~retrysafe.pipeline.idempotency.IdempotencyLayer`).
    """
    handler_routes = getattr(app, "routes", ())
    app = DeadlineLayer(app, timeout=settings.request_timeout)  # 7. handler (504 past deadline)
    app = IdempotencyLayer(
        app,
        store=idempotency_store,
        ttl=settings.idempotency_ttl,
        clock=clock,
        deferrable=deferrable,
    )  # 6. replay, 409 in flight, 422 mismatch
    if route_table is not None:
        app = AuthorizationLayer(app, routes=route_table)  # 5b. 404/405, 403 scope
    failures = None if auth_failure_limiter is None else FailedAuthentications(auth_failure_limiter)
    app = AuthenticationLayer(
        app,
        authenticator=authenticator,
        public_paths=public_paths | {METRICS_PATH},
        failures=failures,
    )  # 5. 401 (429 for an address guessing keys)
    app = RateLimitLayer(app, limiter=rate_limiter, exempt_paths=_UNTHROTTLED)  # 4. 429
    app = BodyLimitLayer(app, max_body=settings.max_body, max_upload=settings.max_upload)  # 3.
    app = RequestLimitLayer(
        app, max_header_bytes=settings.max_header_bytes, max_query_bytes=settings.max_query_bytes
    )  # 3. 400 for oversized headers or query, before the layers below read them
    app = LoadSheddingLayer(
        app, max_in_flight=settings.max_in_flight, exempt_paths=_UNTHROTTLED
    )  # 2. 503
    app = ObservationLayer(
        app,
        metrics=metrics or Metrics(),
        sink=api_log_sink,
        recorded=api_log_paths,
        routes=handler_routes,
        body_limit=settings.api_log_body_limit if settings.api_log_bodies else 0,
    )  # log line, metrics, API log
    return ErrorEnvelopeLayer(app)  # 1. Request-Id + the one envelope
