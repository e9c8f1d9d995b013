"""A Starlette app made retry-safe by retrysafe: orders created once per Idempotency-Key.

Run it like the FastAPI example: ``uvicorn starlette_app:app --app-dir examples``
(ORDERS_STORE picks the idempotency store, ORDERS_DATABASE the app's own database).
With a SQL store the orders table lives in its database, written through
``app.transaction()``: in the record's transaction.
Starlette has no body validation of its own, so the handler checks the shape itself
and raises the envelope's ApiError, which retrysafe renders like every other error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retrysafe.asgi import RetrySafe
from retrysafe.envelope import ApiError, FieldErrors

STORE = os.environ.get("ORDERS_STORE", "memory://")
SCHEME, _, REST = STORE.partition("://")
DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
JOINED = SCHEME in DRIVERS
"""A SQL store: the orders table lives in its database, written in the record's transaction."""
DATABASE = (
    f"{DRIVERS[SCHEME]}://{REST}"
    if JOINED
    else os.environ.get("ORDERS_DATABASE", "sqlite+aiosqlite:///./orders.db")
)
REQUEST_TIMEOUT = float(os.environ.get("ORDERS_REQUEST_TIMEOUT", "30"))

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("sku", sa.String(100), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
)
engine = create_async_engine(DATABASE)
calls = 0  # how often the create handler ran in this process, for GET /stats


@dataclass(frozen=True)
class NewOrder:
    sku: str
    quantity: int
    note: str = ""
    delay: float = 0.0  # seconds the handler takes: lets a client see 409 in flight


async def read_order(request: Request) -> NewOrder:
    """The body as a NewOrder, or the envelope's 400 naming every field that is wrong."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_type", "The body must be a JSON object.")
    problems = FieldErrors()
    for name, kind, required in (
        ("sku", str, True),
        ("quantity", int, True),
        ("note", str, False),
        ("delay", (int, float), False),
    ):
        if name not in body:
            if required:
                problems.add(400, "parameter_missing", f"{name} is required.", f"/{name}")
        elif not isinstance(body[name], kind) or isinstance(body[name], bool):
            problems.add(400, "invalid_type", f"{name} has the wrong type.", f"/{name}")
    problems.raise_if_any()
    return NewOrder(
        sku=body["sku"],
        quantity=body["quantity"],
        note=body.get("note", ""),
        delay=float(body.get("delay", 0.0)),
    )


async def create_order(request: Request) -> JSONResponse:
    global calls
    calls += 1
    order = await read_order(request)
    if order.delay:
        await asyncio.sleep(order.delay)
    if order.quantity < 1:
        raise HTTPException(422, "quantity must be at least 1.")
    if order.sku == "explode":
        raise RuntimeError("the order handler failed")  # the envelope's 500, recorded
    if order.sku == "upstream-down":
        raise HTTPException(502, "The warehouse did not answer.")
    order_id = "ord_" + uuid.uuid4().hex
    row = {"id": order_id, "sku": order.sku, "quantity": order.quantity, "note": order.note}
    if JOINED:  # the record's own transaction: the row commits with the response
        async with app.transaction() as conn:
            await conn.execute(orders.insert().values(**row))
    else:  # commits now, before the response is recorded
        async with engine.begin() as conn:
            await conn.execute(orders.insert().values(**row))
    return JSONResponse(row, status_code=201, headers={"Location": f"/orders/{order_id}"})


async def list_orders(_request: Request) -> JSONResponse:
    async with engine.connect() as conn:
        ids = (await conn.execute(sa.select(orders.c.id).order_by(orders.c.id))).scalars()
        return JSONResponse({"ids": list(ids)})


async def stats(_request: Request) -> JSONResponse:
    return JSONResponse({"calls": calls})


async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield
    await engine.dispose()


api = Starlette(
    routes=[
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders", list_orders, methods=["GET"]),
        Route("/stats", stats),
        Route("/health", health),
    ],
    lifespan=lifespan,
)

app = RetrySafe(api, store=STORE, request_timeout=REQUEST_TIMEOUT)
