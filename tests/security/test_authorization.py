"""Scopes, unknown routes and methods are settled before the idempotency layer: never recorded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import LiveServer

from retrysafe.asgi import Receive, Scope, Send, state
from retrysafe.database import Database
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal
from retrysafe.service.api_docs import DOCS_PATHS
from retrysafe.service.api_keys import ALL_SCOPES
from retrysafe.service.app import create_api
from retrysafe.service.scopes import ENDPOINT_SCOPES, served_endpoints
from retrysafe.settings import Settings

ACCOUNT = {"data": {"attributes": {"reference_id": "user-1", "name_first": "Ada"}}}
PUBLIC_ROUTES = {"/health", "/openapi.json"} | DOCS_PATHS


def test_a_key_without_the_scope_never_gets_a_recorded_create_replayed(
    server: LiveServer,
) -> None:
    """Same organization, same key and body: a read-only key gets 403, not the writer's 201."""
    writer = server.new_key("acme")
    reader = server.new_key("acme", scopes=["accounts:read"])
    headers = {"Idempotency-Key": "create-user-1"}
    with server.client(writer) as w, server.client(reader) as r:
        created = w.post("/accounts", json=ACCOUNT, headers=headers)
        assert created.status_code == 201
        refused = r.post("/accounts", json=ACCOUNT, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["code"] == "permission_denied"
        assert "idempotent-replayed" not in refused.headers
        assert created.json()["data"]["id"] not in refused.text
        # The 403 replaced nothing: the writer still gets its own answer back.
        replay = w.post("/accounts", json=ACCOUNT, headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == created.content


def test_permission_denied_is_never_recorded(server: LiveServer) -> None:
    """A 403 for a missing scope leaves the key free: the right key then executes with it."""
    reader = server.new_key("acme", scopes=["accounts:read"])
    writer = server.new_key("acme")
    headers = {"Idempotency-Key": "first-try-with-the-wrong-key"}
    with server.client(reader) as r, server.client(writer) as w:
        assert r.post("/accounts", json=ACCOUNT, headers=headers).status_code == 403
        created = w.post("/accounts", json=ACCOUNT, headers=headers)
        assert created.status_code == 201
        assert "idempotent-replayed" not in created.headers


def test_unknown_method_is_405_even_with_a_key_used_before(http: httpx.Client) -> None:
    """PATCH /accounts names no endpoint: 405 with Allow, not a key mismatch and not recorded."""
    headers = {"Idempotency-Key": "shared-key"}
    assert http.post("/accounts", json=ACCOUNT, headers=headers).status_code == 201
    response = http.patch("/accounts", json=ACCOUNT, headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["errors"][0]["code"] == "method_not_allowed"


def test_unknown_route_is_404_and_leaves_the_key_free(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "typo-in-the-path"}
    response = http.post("/acounts", json=ACCOUNT, headers=headers)
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"
    created = http.post("/accounts", json=ACCOUNT, headers=headers)
    assert created.status_code == 201
    assert "idempotent-replayed" not in created.headers


def test_public_paths_still_need_no_key(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/openapi.json").status_code == 200


# -- the table and the handlers agree --------------------------------------------------


def _handler_app(tmp_path: Path) -> FastAPI:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db'}", document_dir=tmp_path)
    # Building the app touches no database; the handlers below refuse before any query.
    return create_api(Database(settings.database_url), settings)


def test_every_endpoint_has_a_scope(tmp_path: Path) -> None:
    """A new route without an entry would be authorized by its handler only, i.e. recorded."""
    endpoints = {
        (method, endpoint.path)
        for endpoint in served_endpoints(_handler_app(tmp_path).routes)
        if endpoint.path not in PUBLIC_ROUTES and not endpoint.path.startswith("/dashboard")
        for method in endpoint.methods
        if method != "HEAD"
    }
    assert endpoints == set(ENDPOINT_SCOPES)


@pytest.mark.parametrize(("method", "path"), sorted(ENDPOINT_SCOPES))
async def test_each_handler_demands_the_scope_the_table_names(
    tmp_path: Path, method: str, path: str
) -> None:
    """Called directly, without the pipeline, each handler refuses a key lacking its scope."""
    api = _handler_app(tmp_path)
    needed = ENDPOINT_SCOPES[(method, path)]
    principal = Principal("org_x", "key_x", frozenset(ALL_SCOPES) - {needed})

    async def as_principal(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state(scope)[PRINCIPAL_STATE_KEY] = principal
        await api(scope, receive, send)

    url = path.replace("{", "x_").replace("}", "")
    transport = httpx.ASGITransport(app=as_principal)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, url, json=ACCOUNT)
    assert response.status_code == 403, response.text
    assert needed in response.json()["errors"][0]["details"]
