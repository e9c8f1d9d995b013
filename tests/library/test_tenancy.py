"""The tenant resolver: whose keys a request uses, and never a keyed request without one."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.pipeline.asgi_apps import read_body, send_json

from retrysafe.asgi import ASGIApp, Receive, Scope, Send, state
from retrysafe.envelope import ApiError
from retrysafe.pipeline import PipelineConfig, build_pipeline
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal
from retrysafe.pipeline.tenancy import TenantResolver, by_credential, single_tenant
from retrysafe.stores.memory import MemoryIdempotencyStore


@dataclass
class Counter:
    """Answers 201 with how many times it ran and which tenant it saw."""

    runs: int = 0
    tenants: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        self.runs += 1
        principal = state(scope).get(PRINCIPAL_STATE_KEY)
        self.tenants.append(principal.organization_id if isinstance(principal, Principal) else None)
        await send_json(send, 201, {"run": self.runs})


@asynccontextmanager
async def mounted(app: ASGIApp, tenant: TenantResolver) -> AsyncIterator[httpx.AsyncClient]:
    pipeline = build_pipeline(
        app, config=PipelineConfig(), idempotency_store=MemoryIdempotencyStore(), tenant=tenant
    )
    transport = httpx.ASGITransport(app=pipeline)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def keyed(key: str, credential: str | None = None) -> dict[str, str]:
    headers = {"Idempotency-Key": key}
    if credential is not None:
        headers["Authorization"] = credential
    return headers


def test_the_default_tenant_is_a_hash_of_the_credential_never_the_credential() -> None:
    resolver = by_credential()
    scope: Scope = {"type": "http", "headers": [(b"authorization", b"Bearer s3cret")]}
    tenant = resolver(scope)
    assert tenant == "cred_" + hashlib.sha256(b"Bearer s3cret").hexdigest()[:32]
    assert "s3cret" not in (tenant or "")
    assert resolver({"type": "http", "headers": []}) is None
    assert by_credential("X-API-Key")({"type": "http", "headers": [(b"x-api-key", b"k")]})


async def test_two_credentials_are_two_tenants_and_never_share_a_record() -> None:
    app = Counter()
    async with mounted(app, by_credential()) as http:
        first = await http.post("/orders", json={}, headers=keyed("k", "Bearer alice"))
        second = await http.post("/orders", json={}, headers=keyed("k", "Bearer bob"))
        again = await http.post("/orders", json={}, headers=keyed("k", "Bearer alice"))
    assert (first.json(), second.json()) == ({"run": 1}, {"run": 2})
    assert again.json() == {"run": 1}
    assert again.headers["idempotent-replayed"] == "true"
    assert app.runs == 2


async def test_a_keyed_request_without_a_tenant_is_401_and_not_recorded() -> None:
    """The idempotency layer must never silently skip a keyed request."""
    app = Counter()
    async with mounted(app, by_credential()) as http:
        refused = await http.post("/orders", json={}, headers=keyed("k"))
        runs_after_refusal = app.runs
        accepted = await http.post("/orders", json={}, headers=keyed("k", "Bearer alice"))
        plain = await http.post("/orders", json={})  # no key: nothing to scope, runs as is
    [error] = refused.json()["errors"]
    assert (refused.status_code, error["code"]) == (401, "unauthenticated")
    assert "Authorization" in error["details"]
    assert runs_after_refusal == 0
    assert accepted.status_code == 201
    assert accepted.headers.get("idempotent-replayed") is None
    assert plain.status_code == 201
    assert app.runs == 2


async def test_single_tenant_shares_every_key() -> None:
    app = Counter()
    async with mounted(app, single_tenant("acme")) as http:
        first = await http.post("/orders", json={}, headers=keyed("k", "Bearer alice"))
        second = await http.post("/orders", json={}, headers=keyed("k"))
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert app.tenants == ["acme"]


async def test_an_async_resolver_is_awaited() -> None:
    async def by_header(scope: Scope) -> str | None:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode() or None

    app = Counter()
    async with mounted(app, by_header) as http:
        await http.post("/orders", json={}, headers={**keyed("k"), "X-Tenant": "t1"})
    assert app.tenants == ["t1"]


async def test_a_resolver_that_raises_is_a_500_and_leaves_no_stuck_key() -> None:
    broken = True

    def flaky(_scope: Scope) -> str:
        if broken:
            raise RuntimeError("tenant directory down: 10.1.2.3")
        return "t1"

    app = Counter()
    async with mounted(app, flaky) as http:
        failed = await http.post("/orders", json={}, headers=keyed("k"))
        broken = False
        retried = await http.post("/orders", json={}, headers=keyed("k"))
    [error] = failed.json()["errors"]
    assert (failed.status_code, error["code"]) == (500, "internal_error")
    assert failed.headers["request-id"] in error["details"]
    assert "10.1.2.3" not in failed.text
    assert retried.status_code == 201
    assert retried.headers.get("idempotent-replayed") is None
    assert app.runs == 1


async def test_a_resolver_may_refuse_with_its_own_envelope() -> None:
    def strict(scope: Scope) -> str:
        raise ApiError(403, "permission_denied", "This credential may not create orders.")

    app = Counter()
    async with mounted(app, strict) as http:
        response = await http.post("/orders", json={}, headers=keyed("k"))
    assert response.status_code == 403
    assert response.json()["errors"][0]["details"] == "This credential may not create orders."
    assert app.runs == 0


async def test_a_resolver_returning_something_else_than_a_name_is_a_500() -> None:
    app = Counter()
    async with mounted(app, lambda _scope: 42) as http:  # type: ignore[arg-type,return-value]
        response = await http.post("/orders", json={}, headers=keyed("k"))
    assert response.status_code == 500
    assert app.runs == 0


async def test_requests_the_idempotency_layer_ignores_are_not_resolved() -> None:
    asked: list[str] = []

    def resolver(scope: Scope) -> str:
        asked.append(scope["method"])
        return "t1"

    async with mounted(Counter(), resolver) as http:
        await http.get("/orders", headers=keyed("k"))
        await http.post("/orders", json={})
        await http.post("/orders", json={}, headers=keyed("k"))
    assert asked == ["POST"]


def test_build_pipeline_needs_exactly_one_way_to_scope_keys() -> None:
    store = MemoryIdempotencyStore()

    async def authenticate(_secret: str) -> Principal | None:
        return None

    with pytest.raises(ValueError, match="exactly one of authenticator"):
        build_pipeline(Counter(), config=PipelineConfig(), idempotency_store=store)
    with pytest.raises(ValueError, match="exactly one of authenticator"):
        build_pipeline(
            Counter(),
            config=PipelineConfig(),
            idempotency_store=store,
            authenticator=authenticate,
            tenant=single_tenant(),
        )
    with pytest.raises(TypeError, match="callable"):
        build_pipeline(
            Counter(),
            config=PipelineConfig(),
            idempotency_store=store,
            tenant="acme",  # type: ignore[arg-type]
        )


def test_the_idempotency_layer_alone_refuses_to_be_built_without_a_scope() -> None:
    with pytest.raises(ValueError, match="needs a scope for its keys") as raised:
        IdempotencyLayer(Counter(), store=MemoryIdempotencyStore(), ttl=60)
    assert "tenant=" in str(raised.value)
    assert "scoped_above=True" in str(raised.value)


@asynccontextmanager
async def layer_alone(app: ASGIApp, **scope: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The idempotency layer used on its own, inside only the envelope."""
    layer = IdempotencyLayer(app, store=MemoryIdempotencyStore(), ttl=60, **scope)
    transport = httpx.ASGITransport(app=ErrorEnvelopeLayer(layer))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_the_idempotency_layer_alone_scopes_keys_with_its_tenant() -> None:
    app = Counter()
    async with layer_alone(app, tenant=by_credential()) as http:
        first = await http.post("/orders", json={}, headers=keyed("k", "Bearer a"))
        replay = await http.post("/orders", json={}, headers=keyed("k", "Bearer a"))
        other = await http.post("/orders", json={}, headers=keyed("k", "Bearer b"))
        missing = await http.post("/orders", json={}, headers=keyed("k"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert other.headers.get("idempotent-replayed") is None
    assert (missing.status_code, missing.json()["errors"][0]["code"]) == (401, "unauthenticated")
    assert app.runs == 2


async def test_the_idempotency_layer_alone_answers_a_raising_tenant_and_keeps_no_claim() -> None:
    broken = True

    def flaky(_scope: Scope) -> str:
        if broken:
            raise RuntimeError("tenant directory down")
        return "t1"

    app = Counter()
    async with layer_alone(app, tenant=flaky) as http:
        failed = await http.post("/orders", json={}, headers=keyed("k"))
        broken = False
        retried = await http.post("/orders", json={}, headers=keyed("k"))
    assert (failed.status_code, failed.json()["errors"][0]["code"]) == (500, "internal_error")
    assert retried.status_code == 201
    assert app.runs == 1


async def test_a_principal_set_above_wins_over_the_layers_own_tenant() -> None:
    app = Counter()

    async def authenticated(scope: Scope, receive: Receive, send: Send) -> None:
        state(scope)[PRINCIPAL_STATE_KEY] = Principal("org_a", "key_a", frozenset())
        await layer(scope, receive, send)

    layer = IdempotencyLayer(
        app, store=MemoryIdempotencyStore(), ttl=60, tenant=single_tenant(), scoped_above=True
    )
    transport = httpx.ASGITransport(app=authenticated)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await http.post("/orders", json={}, headers=keyed("k"))
    assert app.tenants == ["org_a"]
