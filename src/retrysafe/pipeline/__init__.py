"""The request pipeline: pure ASGI layers, ordered in exactly one place (:func:`build_pipeline`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
from retrysafe.pipeline.idempotency import DEFAULT_MAX_RECORDED_RESPONSE, IdempotencyLayer
from retrysafe.pipeline.observation import ObservationLayer
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer
from retrysafe.pipeline.request_limits import RequestLimitLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer
from retrysafe.pipeline.tenancy import TenantLayer, TenantResolver

__all__ = ["METRICS_PATH", "MIB", "PipelineConfig", "build_pipeline"]

METRICS_PATH = "/metrics"
"""Like ``/health``, never shed, rate limited or authenticated: a scraper must get through."""

MIB = 1024 * 1024

_UNTHROTTLED = frozenset({"/health", METRICS_PATH})


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The pipeline's own limits; the defaults are what a library mount gets.

    The reference service builds one from its server ``Settings``; the pipeline
    never sees those.
    """

    idempotency_ttl: float = 24 * 60 * 60
    """Seconds an idempotency record is replayed before its key is new again."""

    max_body: int = 1 * MIB
    """Largest non-multipart request body in bytes; beyond it the answer is 413."""

    max_upload: int = 50 * MIB
    """Largest multipart request body in bytes; beyond it the answer is 413."""

    request_timeout: float = 30.0
    """Deadline of one request in seconds, handler included; beyond it the answer is 504."""

    max_in_flight: int = 512
    """Requests served at once by one process; the next one is shed with 503."""

    max_header_bytes: int = 16 * 1024
    """Total bytes of a request's header names and values; beyond it 400 ``headers_too_large``."""

    max_query_bytes: int = 8 * 1024
    """Bytes of a request's query string; beyond it 400 ``query_too_long``."""

    api_log_body_limit: int = 0
    """Bytes of each body an API-log entry keeps; 0 keeps none."""

    max_recorded_response: int = DEFAULT_MAX_RECORDED_RESPONSE
    """Largest response body a keyed request may answer; past it a 500 is recorded instead."""


def _no_api_log(_path: str) -> bool:
    return False


def build_pipeline(
    app: ASGIApp,
    *,
    config: PipelineConfig,
    idempotency_store: IdempotencyStore,
    authenticator: Authenticator | None = None,
    tenant: TenantResolver | None = None,
    rate_limiter: RateLimiter | None = None,
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
    requests ``api_log_paths`` accepts also go to ``api_log_sink``.

    Step 5 names whose keys a request uses, in one of two ways, exactly one of
    which must be given: ``authenticator`` (the service: an API key or 401) or
    ``tenant`` (an app that authenticates on its own: a resolver on the scope, see
    :mod:`.tenancy`). Without ``rate_limiter`` there is no step 4. Given
    ``route_table``, an unknown route (404/405) or a key without the endpoint's
    scope (403) is answered above idempotency too, so never recorded or replayed.
    Given ``auth_failure_limiter``, failed authentications are counted per client
    address and an address past it gets 429 before its key is looked up.
    Requests ``deferrable`` accepts have their idempotency claim deferred to their
    commit (see :class:`~retrysafe.pipeline.idempotency.IdempotencyLayer`).
    """
    if (authenticator is None) == (tenant is None):
        raise ValueError(
            "build_pipeline needs exactly one of authenticator= (API keys) and tenant="
            " (a resolver on the request scope): without either, no idempotency key"
            " would have a scope and nothing would be recorded."
        )
    handler_routes = getattr(app, "routes", ())
    app = DeadlineLayer(app, timeout=config.request_timeout)  # 7. handler (504 past deadline)
    app = IdempotencyLayer(
        app,
        store=idempotency_store,
        ttl=config.idempotency_ttl,
        clock=clock,
        deferrable=deferrable,
        max_recorded_response=config.max_recorded_response,
        scoped_above=True,  # step 5 below sets the principal
    )  # 6. replay, 409 in flight, 422 mismatch
    if route_table is not None:
        app = AuthorizationLayer(app, routes=route_table)  # 5b. 404/405, 403 scope
    if authenticator is not None:
        failures = (
            None if auth_failure_limiter is None else FailedAuthentications(auth_failure_limiter)
        )
        app = AuthenticationLayer(
            app,
            authenticator=authenticator,
            public_paths=public_paths | {METRICS_PATH},
            failures=failures,
        )  # 5. 401 (429 for an address guessing keys)
    else:
        assert tenant is not None
        app = TenantLayer(
            app, tenant
        )  # 5. the tenant scoping keys (401 for a keyed request without)
    if rate_limiter is not None:
        app = RateLimitLayer(app, limiter=rate_limiter, exempt_paths=_UNTHROTTLED)  # 4. 429
    app = BodyLimitLayer(app, max_body=config.max_body, max_upload=config.max_upload)  # 3.
    app = RequestLimitLayer(
        app, max_header_bytes=config.max_header_bytes, max_query_bytes=config.max_query_bytes
    )  # 3. 400 for oversized headers or query, before the layers below read them
    app = LoadSheddingLayer(
        app, max_in_flight=config.max_in_flight, exempt_paths=_UNTHROTTLED
    )  # 2. 503
    app = ObservationLayer(
        app,
        metrics=metrics or Metrics(),
        sink=api_log_sink,
        recorded=api_log_paths,
        routes=handler_routes,
        body_limit=config.api_log_body_limit,
    )  # log line, metrics, API log
    return ErrorEnvelopeLayer(app)  # 1. Request-Id + the one envelope
