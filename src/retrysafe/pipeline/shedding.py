"""Load shedding: a process already serving its maximum answers the next request with 503."""

from __future__ import annotations

from retrysafe.asgi import ASGIApp, Receive, Scope, Send, state
from retrysafe.envelope import ApiError, naming_request, send_error
from retrysafe.pipeline.principal import request_id_of

__all__ = ["SHED_STATE_KEY", "LoadSheddingLayer"]

SHED_STATE_KEY = "retrysafe.shed"
"""Set (to ``True``) in the state of a request this layer shed; metrics count them."""


class LoadSheddingLayer:
    """Counts requests in flight in this process; past ``max_in_flight`` it sheds with 503.

    The counter lives on the instance on purpose: it is how one process protects
    itself, not shared state any correctness property depends on. Nothing below
    runs for a shed request, so nothing is counted by the rate limiter or recorded
    by the idempotency layer, and the client may retry with the same key.
    ``/health`` is never shed and never counted, so a saturated process still
    answers its load balancer.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        exempt_paths: frozenset[str] = frozenset({"/health"}),
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.app = app
        self.max_in_flight = max_in_flight
        self.exempt_paths = exempt_paths
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests this layer is serving right now."""
        return self._in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self.max_in_flight:
            state(scope)[SHED_STATE_KEY] = True
            error = ApiError(
                503,
                "service_unavailable",
                f"The server is at capacity ({self.max_in_flight} requests in flight);"
                " retry after 1 s.",
                headers={"Retry-After": "1"},
            )
            await send_error(send, naming_request(error, request_id_of(scope)))
            return
        # No lock: the event loop is single-threaded and there is no await between
        # the check above and this increment.
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1
