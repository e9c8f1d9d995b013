"""Server-side deadline: a request running past ``--request-timeout`` becomes a 504."""

from __future__ import annotations

import asyncio

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send
from retrysafe.envelope import ApiError

__all__ = ["DeadlineLayer"]


class DeadlineLayer:
    """Runs the app under ``asyncio.timeout``; past it, raises a 504 :class:`ApiError`.

    The 504 is *raised*, not sent, so the idempotency layer above can record it
    as the outcome of the request (SPEC §3 records handler-produced 504s). When
    the response has already started it can no longer become a 504: the
    ``TimeoutError`` propagates and the envelope layer logs it.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.app = app
        self.timeout = timeout
        self._details = f"The request exceeded the server-side deadline of {timeout:g} s."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await self.app(scope, receive, send_tracking_start)
        except TimeoutError:
            # A TimeoutError the app raised itself (an upstream call, say) is not ours to rename.
            if response_started or not deadline.expired():
                raise
            raise ApiError(504, "gateway_timeout", self._details) from None
