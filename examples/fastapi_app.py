"""A FastAPI app made retry-safe by retrysafe: orders created once per Idempotency-Key.

Run it (the store defaults to memory://; ORDERS_STORE=redis://127.0.0.1:6379/0 shares
records between processes)::

    pip install 'retrysafe[redis]' fastapi uvicorn aiosqlite sqlalchemy
    uvicorn fastapi_app:app --app-dir examples

    curl -X POST localhost:8000/orders -H 'Authorization: Bearer k1' \\
         -H 'Idempotency-Key: order-1' -H 'Content-Type: application/json' \\
         -d '{"sku": "book", "quantity": 2}'

Run it again: the same 201, byte for byte, with ``Idempotent-Replayed: true``.
With a memory or Redis store the orders live in the app's own database
(ORDERS_DATABASE, SQLite by default) and commit on their own, before the response is
recorded. With a SQL store (ORDERS_STORE=sqlite:///./idem.db or postgresql://…) the
orders table lives in the store's database and the handler writes it through
``app.session()``: the row commits with the recorded response, or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

from retrysafe.asgi import RetrySafe

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


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield
    await engine.dispose()


api = FastAPI(lifespan=lifespan)


class NewOrder(BaseModel):
    sku: str
    quantity: int
    note: str = ""
    delay: float = 0.0  # seconds the handler takes: lets a client see 409 in flight


@api.post("/orders", status_code=201)
async def create_order(order: NewOrder) -> JSONResponse:
    global calls
    calls += 1
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
    if JOINED:  # an ORM session in the record's transaction: its commit is a savepoint
        async with app.session() as session:
            await session.execute(orders.insert().values(**row))
            await session.commit()
    else:  # commits now, before the response is recorded
        async with engine.begin() as conn:
            await conn.execute(orders.insert().values(**row))
    return JSONResponse(row, status_code=201, headers={"Location": f"/orders/{order_id}"})


@api.get("/orders")
async def list_orders() -> dict[str, list[str]]:
    async with engine.connect() as conn:
        ids = (await conn.execute(sa.select(orders.c.id).order_by(orders.c.id))).scalars()
        return {"ids": list(ids)}


@api.get("/stats")
async def stats() -> dict[str, int]:
    return {"calls": calls}


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app = RetrySafe(api, store=STORE, request_timeout=REQUEST_TIMEOUT)
