"""A response larger than a record holds: a recorded 500, never a pass-through or a stuck key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import litestar
import pytest
from fastapi import FastAPI
from litestar.response import Stream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from retrysafe.asgi import ASGIApp, RetrySafe

LIMIT = 64 * 1024
CHUNK = b"x" * 4096
CHUNKS = 1000  # 4 MB in all, far past LIMIT


class Produced:
    """Counts the chunks a streaming handler got to produce before it was stopped."""

    def __init__(self) -> None:
        self.chunks = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for _ in range(CHUNKS):
            self.chunks += 1
            yield CHUNK


def starlette_app(produced: Produced) -> Starlette:
    async def export(_request: Request) -> StreamingResponse:
        return StreamingResponse(produced.stream(), media_type="text/csv")

    async def whole(_request: Request) -> Response:
        return Response(b"y" * (LIMIT + 1), media_type="text/plain")

    async def small(_request: Request) -> Response:
        return Response(b"y" * LIMIT, media_type="text/plain")

    return Starlette(
        routes=[
            Route("/export", export, methods=["POST"]),
            Route("/whole", whole, methods=["POST"]),
            Route("/small", small, methods=["POST"]),
        ]
    )


def fastapi_app(produced: Produced) -> FastAPI:
    api = FastAPI()

    @api.post("/export")
    async def export() -> StreamingResponse:
        return StreamingResponse(produced.stream(), media_type="text/csv")

    return api


def litestar_app(produced: Produced) -> litestar.Litestar:
    @litestar.post("/export")
    async def export() -> Stream:
        return Stream(produced.stream(), media_type="text/csv")

    return litestar.Litestar([export], logging_config=None)


async def call(app: ASGIApp, path: str, key: str | None = "k1") -> httpx.Response:
    headers = {"Authorization": "Bearer alice"}
    if key is not None:
        headers["Idempotency-Key"] = key
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.post(path, headers=headers)


@pytest.mark.parametrize("build", [starlette_app, fastapi_app, litestar_app])
async def test_a_streamed_response_past_the_limit_is_stopped_and_a_500_recorded(
    build: Callable[[Produced], Any],
) -> None:
    produced = Produced()
    app = RetrySafe(build(produced), store="memory://", max_recorded_response=LIMIT)
    first = await call(app, "/export")
    chunks_after_first = produced.chunks
    replay = await call(app, "/export")
    assert first.status_code == 500
    [error] = first.json()["errors"]
    assert error["code"] == "internal_error"
    assert f"larger than the {LIMIT} bytes an idempotency record can hold" in error["details"]
    assert first.headers["request-id"] in error["details"]
    # Stopped at the limit, not streamed to the end and thrown away.
    assert chunks_after_first <= LIMIT // len(CHUNK) + 2
    assert replay.status_code == 500
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert produced.chunks == chunks_after_first  # the replay did not run the handler


async def test_a_whole_response_past_the_limit_is_the_same_500_and_one_at_it_is_kept() -> None:
    app = RetrySafe(starlette_app(Produced()), store="memory://", max_recorded_response=LIMIT)
    too_big = await call(app, "/whole")
    at_limit = await call(app, "/small", key="k2")
    assert too_big.status_code == 500
    assert at_limit.status_code == 200
    assert len(at_limit.content) == LIMIT
    assert (await call(app, "/small", key="k2")).content == at_limit.content


async def test_without_a_key_nothing_is_recorded_so_nothing_is_limited() -> None:
    produced = Produced()
    app = RetrySafe(starlette_app(produced), store="memory://", max_recorded_response=LIMIT)
    response = await call(app, "/export", key=None)
    assert response.status_code == 200
    assert len(response.content) == CHUNKS * len(CHUNK)
