"""The idempotency layer inside the full pipeline, around a small app of a user's own.

The app writes to a real SQLite database through ``Database.write()``, so these
tests also show that the handler's writes and the recorded answer are one unit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.support.clock import Clock

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.database.schema import idempotency_records, organizations
from retrysafe.pipeline import build_pipeline
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.service.app import pipeline_config
from retrysafe.settings import Settings
from retrysafe.stores.sql import SqlIdempotencyStore

KEYS = {
    "key-a1": Principal("org_a", "key_a1", frozenset()),
    "key-a2": Principal("org_a", "key_a2", frozenset()),
    "key-b": Principal("org_b", "key_b", frozenset()),
}


@dataclass
class Harness:
    client: httpx.AsyncClient
    db: Database
    clock: Clock
    calls: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def rows(self) -> int:
        async with self.db.read() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(organizations))
            return int(count or 0)


def make_app(harness_box: list[Harness]) -> Starlette:
    async def create(request: Request) -> Response:
        harness = harness_box[0]
        body = await request.body()
        payload = json.loads(body) if body else {}
        harness.calls.append(request.url.path)
        harness.started.set()
        if payload.get("slow"):
            await harness.gate.wait()
        async with harness.db.write() as conn:
            await conn.execute(
                organizations.insert().values(
                    id=f"org_{len(harness.calls)}", name=f"n{len(harness.calls)}", created_at="t"
                )
            )
        status = int(payload.get("status", 201))
        if payload.get("crash"):
            raise RuntimeError("secret internal detail /etc/passwd SELECT")
        return JSONResponse(
            {"n": len(harness.calls), "echo": payload},
            status_code=status,
            headers={"Location": f"/things/{len(harness.calls)}"},
        )

    async def upload(request: Request) -> Response:
        harness = harness_box[0]
        harness.calls.append(request.url.path)
        async with request.form() as form:
            return JSONResponse({"fields": sorted(form.keys())}, status_code=201)

    return Starlette(
        routes=[
            Route("/things", create, methods=["POST", "PATCH"]),
            Route("/things/{id}", create, methods=["POST", "PATCH"]),
            Route("/upload", upload, methods=["POST"]),
        ]
    )


@asynccontextmanager
async def make_harness(tmp_path: Path, rate: str = "1000/minute") -> AsyncIterator[Harness]:
    db = Database(f"sqlite:///{tmp_path / 'layer.db'}")
    await upgrade(db)
    clock = Clock()
    box: list[Harness] = []
    settings = replace(Settings(), rate_limit="1000/second", max_body=4096)

    async def authenticate(secret: str) -> Principal | None:
        return KEYS.get(secret)

    app = build_pipeline(
        make_app(box),
        config=pipeline_config(settings),
        authenticator=authenticate,
        idempotency_store=SqlIdempotencyStore(db),
        rate_limiter=RateLimiter.from_settings(rate),
        clock=clock,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        headers={"Authorization": "Bearer key-a1"},
    )
    box.append(Harness(client, db, clock))
    try:
        yield box[0]
    finally:
        await client.aclose()
        await db.dispose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with make_harness(tmp_path) as made:
        yield made


async def post(
    h: Harness,
    key: str | None,
    body: object,
    path: str = "/things",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if key is not None:
        sent["Idempotency-Key"] = key
    return await h.client.post(path, json=body, headers=sent)


async def test_replay_is_byte_identical_and_marked(harness: Harness) -> None:
    first = await post(harness, "k1", {"a": 1})
    second = await post(harness, "k1", {"a": 1})
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["request-id"] != first.headers["request-id"]
    assert harness.calls == ["/things"]
    assert await harness.rows() == 1


async def test_without_key_every_request_runs(harness: Harness) -> None:
    await post(harness, None, {"a": 1})
    await post(harness, None, {"a": 1})
    assert len(harness.calls) == 2


async def test_key_is_shared_by_keys_of_one_organization_only(harness: Harness) -> None:
    first = await post(harness, "shared", {"a": 1})
    same_org = await post(harness, "shared", {"a": 1}, headers={"Authorization": "Bearer key-a2"})
    other_org = await post(harness, "shared", {"a": 1}, headers={"Authorization": "Bearer key-b"})
    assert same_org.headers.get("idempotent-replayed") == "true"
    assert same_org.content == first.content
    assert "idempotent-replayed" not in other_org.headers
    assert len(harness.calls) == 2


async def test_mismatch_is_422_and_does_not_replace_the_record(harness: Harness) -> None:
    first = await post(harness, "k1", {"a": 1})
    other_body = await post(harness, "k1", {"a": 2})
    other_path = await post(harness, "k1", {"a": 1}, path="/things/2")
    for response in (other_body, other_path):
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["code"] == "idempotency_key_mismatch"
        assert "does not match the original" in error["details"]
    again = await post(harness, "k1", {"a": 1})
    assert again.content == first.content
    assert len(harness.calls) == 1


async def test_quoted_key_means_the_same_key(harness: Harness) -> None:
    await post(harness, "abc", {"a": 1})
    replay = await post(harness, '"abc"', {"a": 1})
    assert replay.headers.get("idempotent-replayed") == "true"


@pytest.mark.parametrize("key", ['""', "x" * 256, "with space"])
async def test_invalid_key_is_400_and_runs_nothing(harness: Harness, key: str) -> None:
    response = await post(harness, key, {"a": 1})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_idempotency_key"
    assert harness.calls == []


async def test_error_answers_are_recorded_and_their_writes_discarded(harness: Harness) -> None:
    """A handler's 409 is replayed, and the row it wrote before answering is gone."""
    first = await post(harness, "k4", {"status": 409})
    second = await post(harness, "k4", {"status": 409})
    assert first.status_code == second.status_code == 409
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert harness.calls == ["/things"]
    assert await harness.rows() == 0


async def test_handler_crash_is_a_recorded_500_without_internals(harness: Harness) -> None:
    first = await post(harness, "k5", {"crash": True})
    assert first.status_code == 500
    text = first.text
    for leak in ("secret internal detail", "/etc/passwd", "SELECT", "Traceback", "RuntimeError"):
        assert leak not in text
    error = first.json()["errors"][0]
    assert error["code"] == "internal_error"
    assert first.headers["request-id"] in error["details"]
    second = await post(harness, "k5", {"crash": True})
    assert second.status_code == 500
    assert second.content == first.content
    assert harness.calls == ["/things"]
    assert await harness.rows() == 0


async def test_503_from_the_handler_is_never_recorded(harness: Harness) -> None:
    first = await post(harness, "k6", {"status": 503})
    assert first.status_code == 503
    second = await post(harness, "k6", {"status": 503})
    assert "idempotent-replayed" not in second.headers
    assert len(harness.calls) == 2
    assert await harness.rows() == 0


async def test_in_flight_duplicate_is_409_with_retry_after(harness: Harness) -> None:
    first = asyncio.create_task(post(harness, "k7", {"slow": True}))
    await harness.started.wait()
    duplicate = await post(harness, "k7", {"slow": True})
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert int(duplicate.headers["retry-after"]) >= 1
    harness.gate.set()
    original = await first
    assert original.status_code == 201
    replay = await post(harness, "k7", {"slow": True})
    assert replay.content == original.content
    assert len(harness.calls) == 1


async def test_twenty_simultaneous_duplicates_execute_once(harness: Harness) -> None:
    async def one() -> httpx.Response:
        return await post(harness, "k8", {"slow": True})

    tasks = [asyncio.create_task(one()) for _ in range(24)]
    await harness.started.wait()
    await asyncio.sleep(0.05)
    harness.gate.set()
    responses = await asyncio.gather(*tasks)
    assert sorted({r.status_code for r in responses}) in ([201], [201, 409])
    assert sum(1 for r in responses if r.status_code == 201) >= 1
    assert len(harness.calls) == 1
    assert await harness.rows() == 1


async def test_expired_record_runs_again(harness: Harness) -> None:
    await post(harness, "k9", {"a": 1})
    harness.clock.now += 24 * 3600 + 1
    again = await post(harness, "k9", {"a": 1})
    assert "idempotent-replayed" not in again.headers
    assert len(harness.calls) == 2


async def test_401_is_not_recorded(harness: Harness) -> None:
    bad = await post(harness, "k10", {"a": 1}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    good = await post(harness, "k10", {"a": 1})
    assert good.status_code == 201
    assert "idempotent-replayed" not in good.headers
    assert len(harness.calls) == 1


async def test_429_is_not_recorded(tmp_path: Path) -> None:
    async with make_harness(tmp_path, rate="3/minute") as harness:
        for index in range(3):
            await post(harness, f"warm{index}", {"a": index})
        limited = await post(harness, "k11", {"a": 1})
        assert limited.status_code == 429
        assert await harness.rows() == 3
        async with harness.db.read() as conn:
            recorded = await conn.scalar(
                sa.select(sa.func.count()).select_from(idempotency_records)
            )
        assert recorded == 3


async def test_413_and_415_are_not_recorded(harness: Harness) -> None:
    big = await post(harness, "k12", {"pad": "x" * 5000})
    assert big.status_code == 413
    odd = await harness.client.post(
        "/things", content=b"a=1", headers={"Idempotency-Key": "k12", "Content-Type": "text/plain"}
    )
    assert odd.status_code == 415
    ok = await post(harness, "k12", {"a": 1})
    assert ok.status_code == 201
    assert "idempotent-replayed" not in ok.headers


async def test_get_ignores_the_key(harness: Harness) -> None:
    response = await harness.client.get("/things", headers={"Idempotency-Key": ""})
    assert response.status_code == 405
    assert harness.calls == []


async def test_multipart_retry_replays(harness: Harness) -> None:
    files = {"file": ("a.bin", b"\x00" * 3000 + b"end", "application/octet-stream")}
    data = {"data[attributes][kind]": "passport"}
    headers = {"Idempotency-Key": "k13"}
    first = await harness.client.post("/upload", data=data, files=files, headers=headers)
    second = await harness.client.post("/upload", data=data, files=files, headers=headers)
    changed = {"file": ("a.bin", b"\x00" * 3000 + b"END", "application/octet-stream")}
    third = await harness.client.post("/upload", data=data, files=changed, headers=headers)
    assert first.status_code == 201
    assert first.json() == {"fields": ["data[attributes][kind]", "file"]}
    assert second.headers["idempotent-replayed"] == "true"
    assert third.status_code == 422
    assert len(harness.calls) == 1
