"""The request pipeline: pure ASGI layers, ordered in exactly one place (:func:`build_pipeline`)."""

from __future__ import annotations

from collections.abc import Callable

from retrysafe.asgi import ASGIApp
from retrysafe.idempotency.store import IdempotencyStore
from retrysafe.pipeline.authentication import AuthenticationLayer, Authenticator
from retrysafe.pipeline.body_limits import BodyLimitLayer
from retrysafe.pipeline.deadline import DeadlineLayer
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer
from retrysafe.pipeline.shedding import LoadSheddingLayer
from retrysafe.settings import Settings

__all__ = ["build_pipeline"]


def build_pipeline(
    app: ASGIApp,
    *,
    settings: Settings,
    authenticator: Authenticator,
    idempotency_store: IdempotencyStore,
    rate_limiter: RateLimiter,
    clock: Callable[[], float] | None = None,
) -> ASGIApp:
    """Wrap ``app`` in the SPEC §2 order; this function *is* the architecture diagram.

    Read bottom-up: the handler runs inside a deadline, inside the idempotency
    layer, which only ever sees authenticated, rate-limited, size-checked requests.
    Because rate limiting and authentication sit outside idempotency, a 429 or a
    401 is never recorded, and neither is a 413/415 or a shed 503.
    """
    app = DeadlineLayer(app, timeout=settings.request_timeout)  # 7. handler (504 past deadline)
    app = IdempotencyLayer(app, store=idempotency_store, ttl=settings.idempotency_ttl, clock=clock)
    app = AuthenticationLayer(app, authenticator=authenticator)  # 5. 401
    app = RateLimitLayer(app, limiter=rate_limiter)  # 4. 429 + RateLimit-*
    app = BodyLimitLayer(app, max_body=settings.max_body, max_upload=settings.max_upload)  # 3.
    app = LoadSheddingLayer(app, max_in_flight=settings.max_in_flight)  # 2. 503
    return ErrorEnvelopeLayer(app)  # 1. Request-Id + the one envelope
