"""A Litestar app made retry-safe by retrysafe: orders created once per Idempotency-Key.

Run it like the FastAPI example: ``uvicorn litestar_app:app --app-dir examples``
(ORDERS_STORE picks the idempotency store, ORDERS_DATABASE the app's own database).
With a SQL store the orders table lives in its database, written in the record's
transaction: through ``app.asyncpg_connection()`` on PostgreSQL, ``app.transaction()``
on SQLite.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from litestar import Litestar, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
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


@dataclass
class NewOrder:
    sku: str
    quantity: int
    note: str = ""
    delay: float = 0.0  # seconds the handler takes: lets a client see 409 in flight


@post("/orders", status_code=201)
async def create_order(data: JSONBody[NewOrder]) -> Response[dict[str, Any]]:
    global calls
    calls += 1
    if data.delay:
        await asyncio.sleep(data.delay)
    if data.quantity < 1:
        raise HTTPException(status_code=422, detail="quantity must be at least 1.")
    if data.sku == "explode":
        raise RuntimeError("the order handler failed")  # the envelope's 500, recorded
    if data.sku == "upstream-down":
        raise HTTPException(status_code=502, detail="The warehouse did not answer.")
    order_id = "ord_" + uuid.uuid4().hex
    row = {"id": order_id, "sku": data.sku, "quantity": data.quantity, "note": data.note}
    if JOINED and SCHEME != "sqlite":  # asyncpg itself, in the record's transaction
        async with app.asyncpg_connection() as raw:
            await raw.execute(
                "INSERT INTO orders (id, sku, quantity, note) VALUES ($1, $2, $3, $4)",
                *row.values(),
            )
    elif JOINED:  # the record's own transaction: the row commits with the response
        async with app.transaction() as conn:
            await conn.execute(orders.insert().values(**row))
    else:  # commits now, before the response is recorded
        async with engine.begin() as conn:
            await conn.execute(orders.insert().values(**row))
    return Response(row, status_code=201, headers={"Location": f"/orders/{order_id}"})


@get("/orders")
async def list_orders() -> dict[str, list[str]]:
    async with engine.connect() as conn:
        ids = (await conn.execute(sa.select(orders.c.id).order_by(orders.c.id))).scalars()
        return {"ids": list(ids)}


@get("/stats")
async def stats() -> dict[str, int]:
    return {"calls": calls}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def create_tables() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def close_engine() -> None:
    await engine.dispose()


api = Litestar(
    [create_order, list_orders, stats, health],
    on_startup=[create_tables],
    on_shutdown=[close_engine],
)

app = RetrySafe(api, store=STORE, request_timeout=REQUEST_TIMEOUT)
