"""Header and query-string size limits: 400 before any layer reads either.

uvicorn with httptools accepts headers of any size (a 1 MB header is served), and
every layer below reads headers: the rate limiter hashes ``Authorization``, the
log line copies several, the idempotency layer parses its key. Bounding them here
keeps that work small. The SPEC's table has no 431 or 414, so both limits answer
400 with their own codes (``headers_too_large``, ``query_too_long``).

The raw bytes were already read by the server by then; a front proxy's own limits
(nginx: ``large_client_header_buffers``) bound the memory of one connection.
"""

from __future__ import annotations

from itertools import chain

from retrysafe.asgi import ASGIApp, Receive, Scope, Send
from retrysafe.envelope import ApiError, send_error

__all__ = ["RequestLimitLayer"]


class RequestLimitLayer:
    """Answers 400 when the request's headers or query string are larger than allowed."""

    def __init__(self, app: ASGIApp, *, max_header_bytes: int, max_query_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._violation(scope)
            if error is not None:
                await send_error(send, error)
                return
        await self.app(scope, receive, send)

    def _violation(self, scope: Scope) -> ApiError | None:
        # Summed in C (a generator over the pairs cost three times as much per request).
        header_bytes = sum(map(len, chain.from_iterable(scope["headers"])))
        if header_bytes > self.max_header_bytes:
            return ApiError(
                400,
                "headers_too_large",
                f"The request headers take {header_bytes} bytes; at most "
                f"{self.max_header_bytes} are accepted.",
            )
        query = scope.get("query_string", b"")
        if len(query) > self.max_query_bytes:
            return ApiError(
                400,
                "query_too_long",
                f"The query string is {len(query)} bytes long; at most "
                f"{self.max_query_bytes} are accepted.",
            )
        return None
