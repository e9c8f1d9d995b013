"""RetrySafe.transaction(): the app's writes commit with the idempotency record, or not at all."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retrysafe.asgi import RetrySafe, single_tenant

from .test_mount import running

orders = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("sku", sa.String, primary_key=True),
    sa.Column("n", sa.Integer),
)


def orders_app(path: Path) -> RetrySafe:
    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        async with mounted.transaction() as conn:
            await conn.execute(orders.insert().values(sku=body["sku"], n=1))
        if body.get("then") == "explode":
            raise RuntimeError("after the write")
        if body.get("then") == "refuse":
            return JSONResponse({"errors": []}, status_code=422)
        return JSONResponse({"sku": body["sku"]}, status_code=201)

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (sku TEXT PRIMARY KEY, n INTEGER)")
    api = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    mounted = RetrySafe(api, store=f"sqlite:///{path}", tenant=single_tenant())
    return mounted


def skus(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT sku FROM orders ORDER BY sku")]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    path = tmp_path / "app.db"
    mounted = orders_app(path)
    transport = httpx.ASGITransport(app=mounted)
    async with (
        running(mounted),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        yield http, path


async def test_the_write_commits_with_the_record_and_a_replay_writes_nothing(
    app: tuple[httpx.AsyncClient, Path],
) -> None:
    http, path = app
    first = await http.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "k1"})
    replay = await http.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert skus(path) == ["a"]


@pytest.mark.parametrize(("then", "status"), [("explode", 500), ("refuse", 422)])
async def test_an_error_answer_rolls_the_write_back_and_is_recorded(
    app: tuple[httpx.AsyncClient, Path], then: str, status: int
) -> None:
    http, path = app
    body = {"sku": "b", "then": then}
    first = await http.post("/orders", json=body, headers={"Idempotency-Key": "k2"})
    replay = await http.post("/orders", json=body, headers={"Idempotency-Key": "k2"})
    assert first.status_code == status
    assert replay.headers["idempotent-replayed"] == "true"
    assert skus(path) == []


async def test_without_a_key_the_block_is_a_transaction_of_its_own(
    app: tuple[httpx.AsyncClient, Path],
) -> None:
    http, path = app
    assert (await http.post("/orders", json={"sku": "c"})).status_code == 201
    assert skus(path) == ["c"]


def test_a_store_that_cannot_share_a_transaction_says_so() -> None:
    mounted = RetrySafe(Starlette(), store="memory://")
    with pytest.raises(TypeError, match="only the SQL stores"):
        mounted.transaction()
