"""DirectRoutes: the hot routes answer as FastAPI would, without going through FastAPI.

Each case is sent twice, once to the FastAPI app and once through DirectRoutes,
and the answers must be the same bytes (status, headers, body), for a success,
an ``ApiError``, an ``HTTPException``, a path parameter, and an unexpected
exception (the app's 500, then raised again, as Starlette does). A spy on the
FastAPI app shows the direct routes never reach it and every other request does.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from retrysafe.asgi import Receive, Scope, Send
from retrysafe.envelope import ApiError
from retrysafe.integrations import fastapi as fastapi_errors
from retrysafe.service.direct_routes import DirectRoutes, NotDirect

HOT = (("POST", "/v1/things"), ("GET", "/v1/things/{thing_id}"))


class Boom(Exception):
    pass


def make_app() -> FastAPI:
    app = FastAPI(exception_handlers=fastapi_errors.exception_handlers())

    @app.post("/v1/things")
    async def create(request: Request) -> Response:
        body = await request.body()
        if body == b"bad":
            raise ApiError(422, "validation_failed", "bad body")
        if body == b"boom":
            raise Boom("boom")
        return Response(body, status_code=201, headers={"Location": "/v1/things/1"})

    @app.get("/v1/things/{thing_id}")
    async def get(request: Request) -> Response:
        thing_id = request.path_params["thing_id"]
        if thing_id == "teapot":
            raise HTTPException(418, "short and stout")
        if thing_id == "missing":
            raise ApiError(404, "not_found", f"No thing {thing_id}.")
        return Response(f"thing {thing_id} via {request.scope['route'].path}".encode())

    @app.get("/v1/things")
    async def listing(request: Request) -> Response:
        return Response(b"[]")

    return app


class Spy:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


async def _answer(app: Any, method: str, path: str, body: bytes = b"") -> tuple[Any, ...]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path, content=body)
    return response.status_code, sorted(response.headers.items()), response.content


CASES = [
    ("POST", "/v1/things", b'{"a":1}'),
    ("POST", "/v1/things", b"bad"),
    ("GET", "/v1/things/42"),
    ("GET", "/v1/things/missing"),
    ("GET", "/v1/things/teapot"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]} {case[1]} {case[2:]}")
async def test_a_direct_route_answers_the_bytes_fastapi_answers(case: tuple[Any, ...]) -> None:
    method, path, *body = case
    app = make_app()
    spy = Spy(app)
    direct = DirectRoutes(app, HOT)
    direct.app = spy
    expected = await _answer(make_app(), method, path, *body)
    assert await _answer(direct, method, path, *body) == expected
    assert spy.paths == []  # FastAPI never saw it


async def test_other_routes_and_methods_go_to_fastapi() -> None:
    app = make_app()
    spy = Spy(app)
    direct = DirectRoutes(app, HOT)
    direct.app = spy
    for method, path in (("GET", "/v1/things"), ("PATCH", "/v1/things/1"), ("GET", "/nowhere")):
        assert await _answer(direct, method, path) == await _answer(make_app(), method, path)
    assert spy.paths == ["GET /v1/things", "PATCH /v1/things/1", "GET /nowhere"]


async def test_an_unexpected_exception_gets_the_500_handler_and_is_raised_again() -> None:
    for app in (make_app(), DirectRoutes(make_app(), HOT)):
        transport = httpx.ASGITransport(app=app)  # raises what the app raises
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with pytest.raises(Boom):
                await client.post("/v1/things", content=b"boom")
    rendered = await _answer(DirectRoutes(make_app(), HOT), "POST", "/v1/things", b"boom")
    assert rendered == await _answer(make_app(), "POST", "/v1/things", b"boom")
    assert rendered[0] == 500


def test_only_handlers_that_take_just_the_request_are_called_straight() -> None:
    app = make_app()

    @app.get("/v1/typed/{thing_id}")
    async def typed(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    with pytest.raises(NotDirect, match="takes more than the request"):
        DirectRoutes(app, [("GET", "/v1/typed/{thing_id}")])
    with pytest.raises(NotDirect, match="no such route"):
        DirectRoutes(app, [("DELETE", "/v1/things/{thing_id}")])
