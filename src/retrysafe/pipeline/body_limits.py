"""Body limits: 415 for unsupported content types, 413 for oversized bodies, before parsing."""

from __future__ import annotations

from enum import Enum

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.envelope_layer import ERROR_HEADERS_STATE_KEY

__all__ = ["BodyLimitLayer", "PayloadTooLarge"]

ACCEPTED_MEDIA_TYPES = "application/json (or application/*+json) or multipart/form-data"

# Quoting an attacker-chosen header back is useful to the honest client, but only so much of it.
_ECHO_LIMIT = 100
_KIND_CACHE_SIZE = 256  # distinct accepted Content-Type values remembered; then it starts over


class BodyKind(Enum):
    """How a body is bounded: multipart uploads have their own, larger limit."""

    JSON = "request bodies"
    MULTIPART = "multipart uploads"


class PayloadTooLarge(ApiError):
    """A body grew past its limit while being received; raised from ``receive``."""

    def __init__(self, limit: int, kind: BodyKind) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"The request body exceeds the limit: {kind.value} are limited to {limit} bytes.",
        )


class BodyLimitLayer:
    """Checks a body's ``Content-Type`` and size before anything reads it.

    A body is announced by ``Content-Length > 0`` or ``Transfer-Encoding: chunked``;
    requests without one pass untouched (no 415 for a GET without Content-Type).
    A declared length past the limit is answered at once; a chunked or lying body
    is counted as it is received and :class:`PayloadTooLarge` is raised from
    ``receive`` the moment it crosses the limit, so the layer that reads it (the
    idempotency layer buffering it, or the handler) stops before acting on it.
    """

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int) -> None:
        if max_body < 0 or max_upload < 0:
            raise ValueError("body limits must not be negative")
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        # Content-Type values seen (clients send a handful), parsed once each.
        self._kinds: dict[bytes | None, BodyKind] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # One pass over the headers instead of a lookup per header.
        content_lengths: list[bytes] = []
        content_type: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_lengths.append(value)
            elif name == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif name == b"content-type" and content_type is None:
                content_type = value

        declared: int | None = None
        if content_lengths:
            declared = _parse_content_length(content_lengths)
            if declared is None:
                await send_error(
                    send,
                    ApiError(
                        400,
                        "invalid_content_length",
                        "The Content-Length header must be one non-negative decimal integer.",
                    ),
                )
                return

        if not chunked and not declared:
            await self.app(scope, receive, send)
            return

        kind = self._kinds.get(content_type)
        if kind is None:
            kind = _body_kind(content_type)
            if kind is not None and content_type is not None:
                if len(self._kinds) >= _KIND_CACHE_SIZE:
                    self._kinds.clear()
                self._kinds[content_type] = kind
        if kind is None:
            await send_error(send, _unsupported_media_type(content_type))
            return
        limit = self.max_upload if kind is BodyKind.MULTIPART else self.max_body
        if declared is not None and declared > limit:
            await send_error(
                send,
                ApiError(
                    413,
                    "payload_too_large",
                    f"The request body is {declared} bytes; {kind.value} are limited to"
                    f" {limit} bytes.",
                ),
            )
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit, kind)
            return message

        async def send_without_limiter_headers(message: Message) -> None:
            # A handler that reads the body itself renders the 413 below the rate
            # limiter, which stamps its headers on it; strip them so the 413 reads
            # as this layer's answer either way (SPEC §2).
            if received > limit and message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if not name.startswith(b"ratelimit")
                    ],
                }
            await send(message)

        try:
            await self.app(scope, limited_receive, send_without_limiter_headers)
        except PayloadTooLarge:
            # The rate limiter below has counted this request by now, but a 413 is an
            # answer of this layer, above the limiter: like the Content-Length 413 it
            # carries no RateLimit-* headers (SPEC §2).
            state(scope).pop(ERROR_HEADERS_STATE_KEY, None)
            raise


def _parse_content_length(values: list[bytes]) -> int | None:
    """The declared length, or ``None`` when it is malformed or the copies disagree."""
    first = values[0].strip()
    if not first.isdigit() or (len(values) > 1 and any(v.strip() != first for v in values[1:])):
        return None
    try:
        return int(first)
    except ValueError:  # more digits than int() converts
        return None


def _body_kind(content_type: bytes | None) -> BodyKind | None:
    if content_type is None:
        return None
    media_type, _, parameters = content_type.decode("latin-1").partition(";")
    media_type = media_type.strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return BodyKind.JSON
    if media_type == "multipart/form-data" and _has_boundary(parameters):
        return BodyKind.MULTIPART
    return None


def _has_boundary(parameters: str) -> bool:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return True
    return False


def _unsupported_media_type(content_type: bytes | None) -> ApiError:
    if content_type is None:
        got = "the request has no Content-Type"
    else:
        text = content_type.decode("latin-1")
        if text.split(";", 1)[0].strip().lower() == "multipart/form-data":
            got = "multipart/form-data needs a boundary parameter"
        else:
            got = f"got {text[:_ECHO_LIMIT]!r}"
    return ApiError(
        415,
        "unsupported_media_type",
        f"Send the request body as {ACCEPTED_MEDIA_TYPES}; {got}.",
    )
