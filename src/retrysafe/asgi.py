"""ASGI aliases, the few scope/header helpers every layer shares, and the library's entry point.

``from retrysafe.asgi import RetrySafe`` is how an app mounts the pipeline (see
:mod:`retrysafe.mount`). The entry point is loaded on first use, so the layers
that import the aliases from here do not import the whole pipeline with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from retrysafe.mount import RetrySafe
    from retrysafe.pipeline.tenancy import by_credential, single_tenant
    from retrysafe.stores.url import store_from_url

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "RetrySafe",
    "Scope",
    "Send",
    "by_credential",
    "header",
    "single_tenant",
    "state",
    "store_from_url",
]

_ENTRY_POINTS = {
    "RetrySafe": "retrysafe.mount",
    "by_credential": "retrysafe.pipeline.tenancy",
    "single_tenant": "retrysafe.pipeline.tenancy",
    "store_from_url": "retrysafe.stores.url",
}


def __getattr__(name: str) -> object:
    module = _ENTRY_POINTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


def header(scope: Scope, name: bytes) -> bytes | None:
    """Return the first request header called ``name`` (lower-case bytes), if any."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def state(scope: Scope) -> dict[str, object]:
    """The per-request state dict that Starlette exposes as ``request.state``."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]
