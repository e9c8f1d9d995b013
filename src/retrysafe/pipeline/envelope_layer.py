"""Outermost layer: a Request-Id for every request, the envelope for any exception below."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, state
from retrysafe.envelope import ApiError, error_for, send_error
from retrysafe.pipeline.principal import REQUEST_ID_STATE_KEY
from retrysafe.unavailable import StoreUnavailable
from retrysafe.unique import random_hex

__all__ = ["ERROR_HEADERS_STATE_KEY", "REQUEST_ID_HEADER", "ErrorEnvelopeLayer", "new_request_id"]

REQUEST_ID_HEADER = b"request-id"

ERROR_HEADERS_STATE_KEY = "retrysafe.error_headers"
"""State key for headers a layer below wants on an error this layer renders from an exception.

An exception skips every ``send`` wrapper between the raiser and this layer, so a
layer that decorates responses (the rate limiter and its ``RateLimit-*`` headers)
leaves its headers here as a sequence of ``(name, value)`` byte pairs.
"""

_logger = structlog.get_logger("retrysafe")


def new_request_id() -> str:
    """``req_`` + 24 hex characters: 96 random bits, unique without coordinating processes."""
    return "req_" + random_hex(12)


class ErrorEnvelopeLayer:
    """Request-Id on every response; ``ApiError``, 503 and 500 envelopes for what escapes below.

    A 500 body names only the Request-Id; the exception goes to the log under the
    same id. An exception raised after the response started cannot change the
    response any more, so it is logged and swallowed rather than handed to the
    server (which would log it again without the Request-Id).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = new_request_id()
        state(scope)[REQUEST_ID_STATE_KEY] = request_id
        request_id_header = (REQUEST_ID_HEADER, request_id.encode())
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                # A new list: the app may have built its headers as a tuple or may reuse them.
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            if response_started:
                _logger.error(
                    "exception after the response started",
                    request_id=request_id,
                    path=scope.get("path"),
                    exc_info=exc,
                )
                return
            _log(exc, request_id, scope)
            error = error_for(exc, request_id)
            extra: Sequence[tuple[bytes, bytes]] = state(scope).get(  # type: ignore[assignment]
                ERROR_HEADERS_STATE_KEY, ()
            )
            await send_error(send_with_request_id, error, extra)


def _log(exc: Exception, request_id: str, scope: Scope) -> None:
    """Log what :func:`~retrysafe.envelope.error_for` is about to answer for, if it needs it."""
    if isinstance(exc, ApiError):
        return
    if isinstance(exc, StoreUnavailable):
        # Expected during outages: a warning without a traceback keeps the log readable.
        _logger.warning(
            "store unavailable",
            dependency=exc.dependency,
            request_id=request_id,
            path=scope.get("path"),
            error=str(exc),
        )
        return
    _logger.error(
        "unhandled exception",
        request_id=request_id,
        path=scope.get("path"),
        exc_info=exc,
    )
