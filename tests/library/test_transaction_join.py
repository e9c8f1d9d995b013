"""The app's writes commit with the idempotency record, or not at all, whichever way it writes.

The same orders handler writes through ``RetrySafe.transaction()`` (an
``AsyncConnection``), ``RetrySafe.session()`` (an ORM ``AsyncSession``, which
commits itself) and, on PostgreSQL, ``RetrySafe.asyncpg_connection()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tests.support import postgres
from tests.support.lifespan import running

from retrysafe.asgi import RetrySafe, single_tenant
from retrysafe.database import async_url

orders = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("sku", sa.String, primary_key=True),
    sa.Column("n", sa.Integer),
)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    sku: Mapped[str] = mapped_column(primary_key=True)
    n: Mapped[int]


MAX_RECORDED = 64 * 1024
"""The orders app's recordable limit; ``then: stream`` answers 400 KB."""

WAYS = ("connection", "session", "asyncpg")
"""How the handler writes: a SQLAlchemy connection, an ORM session, asyncpg itself."""


def orders_app(url: str, way: str) -> RetrySafe:
    async def write(sku: str) -> None:
        if way == "connection":
            async with mounted.transaction() as conn:
                await conn.execute(orders.insert().values(sku=sku, n=1))
        elif way == "session":
            async with mounted.session() as session:
                session.add(Order(sku=sku, n=1))
                await session.commit()  # the session's savepoint, not the attempt
        else:
            async with mounted.asyncpg_connection() as raw, raw.transaction():  # a savepoint
                await raw.execute("INSERT INTO orders (sku, n) VALUES ($1, 1)", sku)

    async def create(request: Request) -> Response:
        body = await request.json()
        if body.get("then") == "change_its_mind":  # the session's rollback is its own
            async with mounted.session() as session:
                session.add(Order(sku="dropped", n=1))
                await session.flush()
                await session.rollback()
                session.add(Order(sku=body["sku"], n=1))
                await session.commit()
            return JSONResponse({"sku": body["sku"]}, status_code=201)
        await write(body["sku"])
        if body.get("then") == "explode":
            raise RuntimeError("after the write")
        if body.get("then") == "stream":  # past max_recorded_response, in chunks
            chunks = (b"x" * 4096 for _ in range(100))
            return StreamingResponse(chunks, media_type="text/csv")
        if body.get("then") == "refuse":
            return JSONResponse({"errors": []}, status_code=422)
        return JSONResponse({"sku": body["sku"]}, status_code=201)

    api = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    mounted = RetrySafe(api, store=url, tenant=single_tenant(), max_recorded_response=MAX_RECORDED)
    return mounted


Skus = Callable[[], Awaitable[list[str]]]


async def sql(url: str, statement: str) -> list[str]:
    """Run ``statement`` on its own connection (the app's table, seen from outside)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            result = await conn.execute(sa.text(statement))
            return [row[0] for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture(
    params=[
        *(("sqlite", way) for way in WAYS[:2]),
        *(pytest.param(("postgresql", way), marks=pytest.mark.postgres) for way in WAYS),
    ],
    ids=lambda param: "-".join(param),
)
async def app(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Skus]]:
    name = None
    database, way = request.param
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        if not await postgres.reachable():
            pytest.skip(postgres.SKIP_REASON)
        name = await postgres.create_database()
        url = postgres.url_of(name)
    await sql(url, "CREATE TABLE orders (sku TEXT PRIMARY KEY, n INTEGER)")
    mounted = orders_app(url, way)
    transport = httpx.ASGITransport(app=mounted)

    async def skus() -> list[str]:
        return await sql(url, "SELECT sku FROM orders ORDER BY sku")

    try:
        async with (
            running(mounted),
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            yield http, skus
    finally:
        if name is not None:
            await postgres.drop_database(name)


async def test_the_write_commits_with_the_record_and_a_replay_writes_nothing(
    app: tuple[httpx.AsyncClient, Skus],
) -> None:
    http, skus = app
    first = await http.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "k1"})
    replay = await http.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert await skus() == ["a"]


@pytest.mark.parametrize(("then", "status"), [("explode", 500), ("refuse", 422), ("stream", 500)])
async def test_an_error_answer_rolls_the_write_back_and_is_recorded(
    app: tuple[httpx.AsyncClient, Skus], then: str, status: int
) -> None:
    http, skus = app
    body = {"sku": "b", "then": then}
    first = await http.post("/orders", json=body, headers={"Idempotency-Key": "k2"})
    replay = await http.post("/orders", json=body, headers={"Idempotency-Key": "k2"})
    assert first.status_code == status
    assert replay.headers["idempotent-replayed"] == "true"
    assert await skus() == []


async def test_without_a_key_the_block_is_a_transaction_of_its_own(
    app: tuple[httpx.AsyncClient, Skus],
) -> None:
    http, skus = app
    assert (await http.post("/orders", json={"sku": "c"})).status_code == 201
    assert await skus() == ["c"]


async def test_a_store_that_cannot_share_a_transaction_says_so() -> None:
    mounted = RetrySafe(Starlette(), store="memory://")
    with pytest.raises(TypeError, match="only the SQL stores"):
        mounted.transaction()
    with pytest.raises(TypeError, match="only the SQL stores"):
        async with mounted.session():
            pass
    with pytest.raises(TypeError, match="only the SQL stores"):
        async with mounted.asyncpg_connection():
            pass


async def test_asyncpg_needs_a_postgresql_store(tmp_path: Path) -> None:
    mounted = RetrySafe(Starlette(), store=f"sqlite:///{tmp_path / 'idem.db'}")
    async with running(mounted):
        with pytest.raises(TypeError, match="needs a postgresql:// store"):
            async with mounted.asyncpg_connection():
                pass


async def test_a_sessions_rollback_undoes_only_its_own_work(
    app: tuple[httpx.AsyncClient, Skus],
) -> None:
    http, skus = app
    body = {"sku": "kept", "then": "change_its_mind"}
    first = await http.post("/orders", json=body, headers={"Idempotency-Key": "k3"})
    replay = await http.post("/orders", json=body, headers={"Idempotency-Key": "k3"})
    assert first.status_code == 201, first.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert await skus() == ["kept"]
