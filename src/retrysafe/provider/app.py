"""The provider's HTTP API (``retrysafe provider``): checks, counters and health.

- ``POST /v1/checks`` with an optional ``Idempotency-Key``: 200 with
  ``{"id", "kind", "reference", "status", "reasons"}``; 400 for a body it cannot
  read; 422 for a key reused with another body.
- ``GET /stats``: ``{"checks_run": N}``, the checks really run (repeats answered
  from a record are not counted).
- ``GET /health``: 200.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retrysafe.provider.upstream import Answer, ReferenceProvider


def create_provider_app(provider: ReferenceProvider) -> Starlette:
    """An ASGI app serving ``provider``."""

    async def check(request: Request) -> Response:
        body = await request.body()
        return _response(await provider.handle(request.headers.get("idempotency-key"), body))

    async def stats(_request: Request) -> Response:
        return _response(provider.stats())

    async def health(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/checks", check, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def _response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)
