"""RetrySafe: the public entry point, its defaults, its lifespan and its start-up errors."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.requests import Request
from tests.support.lifespan import lifespan, running
from tests.support.throwaway import free_port

from retrysafe.asgi import ASGIApp, RetrySafe, Scope, single_tenant
from retrysafe.stores.memory import MemoryIdempotencyStore
from retrysafe.stores.url import UrlStore

JSON = {"content-type": "application/json"}
KEYED = {"Idempotency-Key": "k1", "Authorization": "Bearer alice"}


def orders_api() -> FastAPI:
    api = FastAPI()
    api.state.runs = 0

    @api.post("/orders", status_code=201)
    async def create(body: dict[str, Any]) -> dict[str, Any]:
        api.state.runs += 1
        return {"run": api.state.runs, **body}

    @api.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "No such order.")

    return api


@asynccontextmanager
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_a_mounted_app_replays_and_speaks_the_envelope() -> None:
    api = orders_api()
    app = RetrySafe(api, store="memory://")
    async with client(app) as http:
        first = await http.post("/orders", json={"sku": "A"}, headers=KEYED)
        replay = await http.post("/orders", json={"sku": "A"}, headers=KEYED)
        unknown = await http.get("/nope")
        missing = await http.get("/missing")
    assert first.status_code == 201
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert api.state.runs == 1
    assert first.headers["request-id"].startswith("req_")
    assert unknown.json()["errors"][0]["code"] == "not_found"
    assert missing.json()["errors"][0]["details"] == "No such order."


async def test_no_rate_limiter_unless_asked_for() -> None:
    async with client(RetrySafe(orders_api(), store="memory://")) as http:
        unlimited = await http.post("/orders", json={})
    assert "ratelimit-limit" not in unlimited.headers
    limited_app = RetrySafe(orders_api(), store="memory://", rate_limit="2/minute")
    async with client(limited_app) as http:
        answers = [await http.post("/orders", json={}) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[0].headers["ratelimit-limit"] == "2"
    assert answers[2].json()["errors"][0]["code"] == "rate_limited"


async def test_body_limit_and_shedding_are_on_by_default() -> None:
    app = RetrySafe(orders_api(), store="memory://")
    async with client(app) as http:
        too_big = await http.post(
            "/orders",
            content=b'{"x": "' + b"a" * (1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
    assert too_big.status_code == 413
    assert too_big.json()["errors"][0]["code"] == "payload_too_large"
    assert app.config.max_in_flight == 512


def test_no_tenant_is_a_start_up_error() -> None:
    with pytest.raises(ValueError, match="needs a tenant"):
        RetrySafe(orders_api(), store="memory://", tenant=None)


def test_an_unknown_store_scheme_is_a_start_up_error() -> None:
    with pytest.raises(ValueError, match="Unknown idempotency store URL 'mongodb://h/db'"):
        RetrySafe(orders_api(), store="mongodb://h/db")


async def test_the_apps_own_exception_handlers_are_kept() -> None:
    api = orders_api()

    @api.exception_handler(HTTPException)
    async def mine(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"mine": True}, status_code=404)

    async with client(RetrySafe(api, store="memory://")) as http:
        own = await http.get("/missing")
        invalid = await http.post(
            "/orders", content=b"[", headers={"content-type": "application/json"}
        )
    assert own.json() == {"mine": True}
    assert invalid.json()["errors"][0]["code"] == "invalid_json"


async def test_a_store_object_is_used_as_given() -> None:
    store = MemoryIdempotencyStore()
    app = RetrySafe(orders_api(), store=store, tenant=single_tenant())
    async with client(app) as http:
        await http.post("/orders", json={}, headers={"Idempotency-Key": "k"})
    assert app.store is store
    assert await store.purge_expired(1e12) == 1


async def test_an_unreachable_store_fails_the_start_up_with_its_url() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    sent = await lifespan(RetrySafe(orders_api(), store=url))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    message = sent[0]["message"]
    assert message.startswith("retrysafe: The idempotency store (redis) at redis://:***@127.0.0.1:")
    assert "unreachable" in message
    assert "hunter2" not in message


async def test_lifespan_opens_the_store_and_closes_it_after_the_app(tmp_path: Any) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        events.append("app started")
        yield
        events.append("app stopped")

    api = FastAPI(lifespan=app_lifespan)
    app = RetrySafe(api, store=f"sqlite:///{tmp_path / 'idem.db'}")
    assert isinstance(app.store, UrlStore)
    sent = await lifespan(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app started", "app stopped"]
    assert (tmp_path / "idem.db").exists()
    with pytest.raises(RuntimeError, match="not open"):
        _ = app.store.store  # closed again at shutdown


async def test_an_app_without_lifespan_support_still_gets_its_store_opened() -> None:
    async def plain(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    app = RetrySafe(plain, store="memory://")
    sent = await lifespan(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_the_heap_is_frozen_once_the_app_has_started_unless_asked_not_to() -> None:
    """Full collections skip what start-up built, as under ``retrysafe serve``."""
    frozen_at_app_startup: list[int] = []

    @asynccontextmanager
    async def app_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        frozen_at_app_startup.append(gc.get_freeze_count())
        yield

    gc.unfreeze()
    async with running(RetrySafe(FastAPI(lifespan=app_lifespan), store="memory://")):
        assert frozen_at_app_startup == [0]  # the app's own start-up comes first
        assert gc.get_freeze_count() > 0
    gc.unfreeze()
    async with running(
        RetrySafe(FastAPI(lifespan=app_lifespan), store="memory://", freeze_heap=False)
    ):
        assert gc.get_freeze_count() == 0


class WatchedStore(MemoryIdempotencyStore):
    """A memory store that says when a purge removed something."""

    def __init__(self) -> None:
        super().__init__()
        self.purged = asyncio.Event()

    async def purge_expired(self, now: float) -> int:
        count = await super().purge_expired(now)
        if count:
            self.purged.set()
        return count


async def test_expired_records_are_purged_while_the_app_runs() -> None:
    now = [1000.0]
    store = WatchedStore()
    app = RetrySafe(
        orders_api(), store=store, idempotency_ttl=60, purge_interval=0.05, clock=lambda: now[0]
    )
    async with running(app), client(app) as http:
        first = await http.post("/orders", json={}, headers=KEYED)
        await asyncio.sleep(0.2)  # purges run meanwhile; nothing has expired yet
        assert not store.purged.is_set()
        now[0] += 61  # past the record's expiry
        await asyncio.wait_for(store.purged.wait(), timeout=5)
        again = await http.post("/orders", json={}, headers=KEYED)
    assert first.json()["run"] == 1
    assert again.json()["run"] == 2  # the key is new again
    assert "idempotent-replayed" not in again.headers
