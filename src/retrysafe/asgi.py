"""ASGI aliases and the few scope/header helpers every layer shares."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "header", "state"]


def header(scope: Scope, name: bytes) -> bytes | None:
    """Return the first request header called ``name`` (lower-case bytes), if any."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def state(scope: Scope) -> dict[str, object]:
    """The per-request state dict that Starlette exposes as ``request.state``."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]
