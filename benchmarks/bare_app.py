"""The baseline: a bare FastAPI handler that validates the same body and inserts one row.

No retrysafe layer runs here: no rate limit, no authentication, no idempotency. It is
written the way a FastAPI user would write it (SQLAlchemy Core on aiosqlite, WAL).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("sqlite+aiosqlite:///" + os.environ["BARE_DB"])


@event.listens_for(engine.sync_engine, "connect")
def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


metadata = sa.MetaData()
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("reference_id", sa.String(255), unique=True),
    sa.Column("name_first", sa.String(255)),
    sa.Column("created_at", sa.String(32)),
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/accounts", status_code=201)
async def create(request: Request) -> Response:
    attributes = json.loads(await request.body())["data"]["attributes"]
    if not isinstance(attributes.get("name_first"), str):
        return Response(b'{"errors":[]}', status_code=400, media_type="application/json")
    row = {
        "id": "act_" + secrets.token_hex(12),
        "reference_id": attributes.get("reference_id"),
        "name_first": attributes["name_first"],
        "created_at": datetime.now(UTC).isoformat(),
    }
    async with engine.begin() as conn:
        await conn.execute(accounts.insert().values(row))
    body = json.dumps({"data": {"type": "account", "id": row["id"], "attributes": row}})
    return Response(body.encode(), status_code=201, media_type="application/json")
