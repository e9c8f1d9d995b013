"""The framework's own errors in the one envelope: FastAPI, Starlette and Litestar apps.

Each app installs the handlers of :mod:`retrysafe.integrations` and is driven
under the pipeline's envelope layer (which gives the Request-Id), in process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import litestar
import pytest
from fastapi import FastAPI
from fastapi import HTTPException as FastApiHTTPException
from litestar.params import FromPath, FromQuery, JSONBody
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retrysafe.asgi import ASGIApp
from retrysafe.integrations import fastapi as fastapi_errors
from retrysafe.integrations import litestar as litestar_errors
from retrysafe.integrations import starlette as starlette_errors
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.unavailable import StoreUnavailable


@asynccontextmanager
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ErrorEnvelopeLayer(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def errors_of(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """The envelope's errors, after checking the one shape every error answer has."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["errors"]
    for error in body["errors"]:
        assert error["status"] == str(status)
    return list(body["errors"])


class Attributes(BaseModel):
    name: str
    age: int = Field(default=0, ge=0)


class Data(BaseModel):
    attributes: Attributes


class Document(BaseModel):
    data: Data


def fastapi_app() -> FastAPI:
    app = FastAPI()
    fastapi_errors.install(app)

    @app.post("/things")
    async def create(document: Document, limit: int = 10) -> dict[str, Any]:
        return {"name": document.data.attributes.name, "limit": limit}

    @app.get("/things")
    async def listing() -> list[str]:
        return []

    @app.get("/things/{thing_id}")
    async def read(thing_id: int) -> dict[str, int]:
        raise FastApiHTTPException(404, f"Thing {thing_id} does not exist.")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret /etc/passwd")

    @app.get("/down")
    async def down() -> None:
        raise StoreUnavailable("connection refused to 10.0.0.7", dependency="database")

    return app


async def test_fastapi_unknown_route_is_a_404_envelope() -> None:
    async with client(fastapi_app()) as http:
        [error] = errors_of(await http.get("/nope"), 404)
    assert error["code"] == "not_found"
    assert error["details"] == "No route GET /nope; see /openapi.json."


async def test_fastapi_wrong_method_is_a_405_allowing_every_method_of_the_path() -> None:
    async with client(fastapi_app()) as http:
        response = await http.delete("/things")
    [error] = errors_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"


async def test_fastapi_http_exception_keeps_the_handlers_words() -> None:
    async with client(fastapi_app()) as http:
        [error] = errors_of(await http.get("/things/7"), 404)
    assert error == {
        "title": "Not Found",
        "details": "Thing 7 does not exist.",
        "status": "404",
        "code": "not_found",
    }


async def test_fastapi_validation_reports_every_field_with_its_pointer() -> None:
    body = {"data": {"attributes": {"name": 5, "age": -1}}}
    async with client(fastapi_app()) as http:
        errors = errors_of(await http.post("/things", json=body, params={"limit": "x"}), 400)
    found = {(e.get("source") or {}).get("pointer"): e["code"] for e in errors}
    assert found == {
        "/data/attributes/name": "invalid_type",
        "/data/attributes/age": "invalid_value",
        None: "invalid_parameter",
    }
    by_code = {e["code"]: e["details"] for e in errors}
    assert by_code["invalid_type"] == "data.attributes.name should be a valid string."
    assert by_code["invalid_parameter"].startswith("Query parameter limit should be")


async def test_fastapi_missing_field_is_parameter_missing() -> None:
    async with client(fastapi_app()) as http:
        [error] = errors_of(await http.post("/things", json={"data": {"attributes": {}}}), 400)
    assert error["code"] == "parameter_missing"
    assert error["source"] == {"pointer": "/data/attributes/name"}
    assert error["details"] == "data.attributes.name is required."


async def test_fastapi_value_problems_alone_are_422() -> None:
    body = {"data": {"attributes": {"name": "Ada", "age": -1}}}
    async with client(fastapi_app()) as http:
        [error] = errors_of(await http.post("/things", json=body), 422)
    assert error["code"] == "invalid_value"
    assert error["source"] == {"pointer": "/data/attributes/age"}


async def test_fastapi_invalid_json_is_invalid_json() -> None:
    async with client(fastapi_app()) as http:
        response = await http.post(
            "/things", content=b'{"data": ', headers={"content-type": "application/json"}
        )
    [error] = errors_of(response, 400)
    assert error["code"] == "invalid_json"
    assert "source" not in error


async def test_fastapi_unhandled_exception_is_a_500_naming_only_the_request_id() -> None:
    async with client(fastapi_app()) as http:
        response = await http.get("/boom")
    [error] = errors_of(response, 500)
    assert error["code"] == "internal_error"
    assert response.headers["request-id"] in error["details"]
    assert "passwd" not in response.text
    assert "RuntimeError" not in response.text


async def test_fastapi_unreachable_store_is_a_503_without_its_address() -> None:
    async with client(fastapi_app()) as http:
        response = await http.get("/down")
    [error] = errors_of(response, 503)
    assert error["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    assert "10.0.0.7" not in response.text


async def starlette_boom(_request: Request) -> JSONResponse:
    raise RuntimeError("secret")


async def starlette_teapot(_request: Request) -> JSONResponse:
    raise HTTPException(418, "short and stout")


async def starlette_things(_request: Request) -> JSONResponse:
    return JSONResponse([])


def starlette_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/things", starlette_things, methods=["GET"]),
            Route("/things", starlette_things, methods=["POST"]),
            Route("/boom", starlette_boom),
            Route("/teapot", starlette_teapot),
        ]
    )
    starlette_errors.install(app)
    return app


async def test_starlette_errors_are_envelopes() -> None:
    async with client(starlette_app()) as http:
        [missing] = errors_of(await http.get("/nope"), 404)
        wrong = await http.put("/things")
        [teapot] = errors_of(await http.get("/teapot"), 418)
        boom = await http.get("/boom")
    assert missing["details"] == "No route GET /nope."
    assert errors_of(wrong, 405)[0]["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    assert (teapot["code"], teapot["details"]) == ("im_a_teapot", "short and stout")
    [error] = errors_of(boom, 500)
    assert boom.headers["request-id"] in error["details"]
    assert "secret" not in boom.text


@dataclass
class LitestarAttributes:
    name: str
    age: int = 0


@dataclass
class LitestarData:
    attributes: LitestarAttributes


@dataclass
class LitestarDocument:
    data: LitestarData


@litestar.post("/things")
async def litestar_create(
    data: JSONBody[LitestarDocument], limit: FromQuery[int] = 10
) -> dict[str, Any]:
    return {"name": data.data.attributes.name, "limit": limit}


@litestar.get("/things/{thing_id:int}")
async def litestar_read(thing_id: FromPath[int]) -> dict[str, Any]:
    raise litestar.exceptions.NotFoundException(f"Thing {thing_id} does not exist.")


@litestar.get("/boom")
async def litestar_boom() -> None:
    raise RuntimeError("secret /etc/passwd")


def litestar_app() -> litestar.Litestar:
    return litestar.Litestar(
        [litestar_create, litestar_read, litestar_boom],
        exception_handlers=litestar_errors.exception_handlers(),
        # Litestar's default logging config would reconfigure this process's root logger.
        logging_config=None,
    )


async def test_litestar_routing_errors_are_envelopes() -> None:
    async with client(litestar_app()) as http:
        [missing] = errors_of(await http.get("/nope"), 404)
        wrong = await http.delete("/things")
        [named] = errors_of(await http.get("/things/7"), 404)
    assert missing["details"] == "No route GET /nope."
    assert errors_of(wrong, 405)[0]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert named["details"] == "Thing 7 does not exist."


@pytest.mark.parametrize(
    ("attributes", "status", "code", "pointer"),
    [
        ({"name": 5}, 400, "invalid_type", "/data/attributes/name"),
        ({}, 400, "parameter_missing", "/data/attributes/name"),
        ({"name": "Ada", "age": "x"}, 400, "invalid_type", "/data/attributes/age"),
    ],
)
async def test_litestar_body_validation_points_into_the_body(
    attributes: dict[str, Any], status: int, code: str, pointer: str
) -> None:
    """Litestar's own key drops every ``data.``; the pointer must not."""
    async with client(litestar_app()) as http:
        response = await http.post("/things", json={"data": {"attributes": attributes}})
    [error] = errors_of(response, status)
    assert (error["code"], error["source"]) == (code, {"pointer": pointer})


async def test_litestar_query_and_json_errors() -> None:
    async with client(litestar_app()) as http:
        [query] = errors_of(
            await http.post(
                "/things", params={"limit": "x"}, json={"data": {"attributes": {"name": "A"}}}
            ),
            400,
        )
        [broken] = errors_of(
            await http.post(
                "/things", content=b"{nope", headers={"content-type": "application/json"}
            ),
            400,
        )
    assert (query["code"], query["details"]) == (
        "invalid_parameter",
        "Query parameter limit should be of type int.",
    )
    assert broken["code"] == "invalid_json"


async def test_litestar_unhandled_exception_is_a_500_naming_only_the_request_id() -> None:
    async with client(litestar_app()) as http:
        response = await http.get("/boom")
    [error] = errors_of(response, 500)
    assert response.headers["request-id"] in error["details"]
    assert "passwd" not in response.text
