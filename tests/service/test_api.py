"""Rules every endpoint shares: 401/403/404 semantics, Request-Id, health, routes, OpenAPI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from retrysafe.service.api_keys import ALL_SCOPES

from .api_calls import body, create_account, create_inquiry, envelope, upload

ACCOUNT = "act_00000000000000000000000000"
INQUIRY = "inq_00000000000000000000000000"
DOCUMENT = "doc_00000000000000000000000000"
VERIFICATION = "ver_00000000000000000000000000"

# (method, path template, scope, request kwargs) for every endpoint of SPEC §4 in scope.
ENDPOINTS = [
    ("POST", "/accounts", "accounts:write", {"json": body()}),
    ("GET", "/accounts/{account}", "accounts:read", {}),
    ("GET", "/accounts", "accounts:read", {}),
    ("PATCH", "/accounts/{account}", "accounts:write", {"json": body()}),
    ("POST", "/inquiries", "inquiries:write", {"json": body(reference_id="r")}),
    ("GET", "/inquiries/{inquiry}", "inquiries:read", {}),
    ("GET", "/inquiries", "inquiries:read", {}),
    ("POST", "/inquiries/{inquiry}/complete", "inquiries:write", {}),
    ("POST", "/inquiries/{inquiry}/approve", "inquiries:write", {}),
    ("POST", "/inquiries/{inquiry}/decline", "inquiries:write", {}),
    ("POST", "/inquiries/{inquiry}/expire", "inquiries:write", {}),
    ("POST", "/inquiries/{inquiry}/documents", "documents:write", {"files": {"file": b"x"}}),
    ("GET", "/documents/{document}", "documents:read", {}),
    ("GET", "/documents/{document}/content", "documents:read", {}),
    ("POST", "/inquiries/{inquiry}/verifications", "inquiries:write", {}),
    ("GET", "/verifications/{verification}", "inquiries:read", {}),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _, _ in ENDPOINTS]


@pytest.fixture
def owned(http: httpx.Client) -> dict[str, str]:
    """One account, inquiry, document and verification of the organization ``acme``."""
    account = create_account(http, reference_id="owned")
    inquiry = create_inquiry(http, account_id=account["id"])
    document = upload(http, inquiry["id"], b"secret bytes").json()["data"]
    verification = http.post(f"/inquiries/{inquiry['id']}/verifications").json()["data"]
    return {
        "account": account["id"],
        "inquiry": inquiry["id"],
        "document": document["id"],
        "verification": verification["id"],
    }


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_key_without_the_scope_gets_403(
    server, owned: dict[str, str], method: str, path: str, scope: str, kwargs: dict
) -> None:
    others = [s for s in ALL_SCOPES if s != scope]
    with server.client(server.new_key(scopes=others)) as client:
        response = client.request(method, path.format(**owned), **kwargs)
    errors = envelope(response, 403, "permission_denied")
    assert scope in errors[0]["details"]


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_key_with_only_that_scope_is_allowed(
    server, owned: dict[str, str], method: str, path: str, scope: str, kwargs: dict
) -> None:
    with server.client(server.new_key(scopes=[scope])) as client:
        response = client.request(method, path.format(**owned), **kwargs)
    # A transition may be refused by the state machine, never by authorization.
    assert response.status_code in (200, 201, 422), response.text


@pytest.mark.parametrize(
    ("method", "path", "scope", "kwargs"),
    [e for e in ENDPOINTS if "{" in e[1]],
    ids=[i for i, e in zip(ENDPOINT_IDS, ENDPOINTS, strict=True) if "{" in e[1]],
)
def test_other_organizations_objects_are_404_and_untouched(
    server, http: httpx.Client, owned: dict[str, str], method: str, path: str, scope: str, kwargs
) -> None:
    """Never 403 and never data: another organization cannot tell the object exists."""
    before = {
        "account": http.get(f"/accounts/{owned['account']}").json(),
        "inquiry": http.get(f"/inquiries/{owned['inquiry']}").json(),
    }
    with server.client(server.new_key(org="globex")) as intruder:
        response = intruder.request(method, path.format(**owned), **kwargs)
    envelope(response, 404, "not_found")
    assert "secret bytes" not in response.text
    assert http.get(f"/accounts/{owned['account']}").json() == before["account"]
    assert http.get(f"/inquiries/{owned['inquiry']}").json() == before["inquiry"]


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_endpoint_needs_an_api_key(
    server, method: str, path: str, scope: str, kwargs: dict
) -> None:
    ids = {
        "account": ACCOUNT,
        "inquiry": INQUIRY,
        "document": DOCUMENT,
        "verification": VERIFICATION,
    }
    with server.client(None) as anonymous:
        response = anonymous.request(method, path.format(**ids), **kwargs)
    envelope(response, 401, "unauthenticated")


def test_unknown_and_revoked_keys_are_401(server, http: httpx.Client, api_key: str) -> None:
    with server.client("rsk_key_0000000000000000.not-a-secret") as stranger:
        envelope(stranger.get("/accounts"), 401, "unauthenticated")
    wrong_secret = api_key.rpartition(".")[0] + ".wrong"
    with server.client(wrong_secret) as guesser:
        envelope(guesser.get("/accounts"), 401, "unauthenticated")
    assert http.get("/accounts").status_code == 200
    assert server.revoke_key(api_key)
    envelope(http.get("/accounts"), 401, "unauthenticated")


def test_unknown_route_is_a_404_envelope(http: httpx.Client) -> None:
    errors = envelope(http.get("/nothing-here"), 404, "not_found")
    assert "/api/v1/nothing-here" in errors[0]["details"]
    envelope(http.post("/accounts/act_x/launch"), 404, "not_found")


def test_wrong_method_is_a_405_envelope(http: httpx.Client) -> None:
    response = http.delete("/accounts")
    envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_every_response_carries_a_unique_request_id(
    server, http: httpx.Client, owned: dict[str, str]
) -> None:
    responses = [
        http.post("/accounts", json=body()),
        http.get(f"/accounts/{owned['account']}"),
        http.get(f"/documents/{owned['document']}/content"),
        http.get("/nothing-here"),
        http.post("/accounts", content=b"{", headers={"content-type": "application/json"}),
        http.post(f"/inquiries/{owned['inquiry']}/approve"),
        httpx.get(server.url + "/health"),
        httpx.get(server.url + "/openapi.json"),
        httpx.get(server.api_url + "/accounts"),
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 404, 400, 422, 200, 200, 401]
    request_ids = [r.headers["request-id"] for r in responses]
    assert all(rid.startswith("req_") for rid in request_ids)
    assert len(set(request_ids)) == len(request_ids)


def test_health_answers_without_a_key_and_without_rate_limit_headers(server) -> None:
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"
    assert "ratelimit-limit" not in response.headers


def test_health_is_503_when_the_database_cannot_be_reached(live_server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the database directory should be")
    server = live_server(database_url=f"sqlite:///{blocker}/db.sqlite", migrate=False)
    response = httpx.get(server.url + "/health")
    errors = envelope(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) > 0
    assert str(tmp_path) not in errors[0]["details"]


def test_openapi_documents_every_endpoint_bodies_and_errors(server) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    paths = document["paths"]
    documented = {
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in paths.items()
        for method in operations
    }
    expected = {
        (
            method,
            path.replace("{account}", "{account_id}")
            .replace("{inquiry}", "{inquiry_id}")
            .replace("{document}", "{document_id}")
            .replace("{verification}", "{verification_id}"),
        )
        for method, path, _, _ in ENDPOINTS
    }
    api_logs = {("GET", "/api-logs"), ("GET", "/api-logs/{log_id}")}
    assert expected | api_logs | {("GET", "/health")} == documented
    schemas = document["components"]["schemas"]
    assert {"Errors", "Error", "Account", "Inquiry", "Document"} <= set(schemas)
    for method, path in expected:
        operation = paths["/api/v1" + path][method.lower()]
        for status in ("401", "429", "500"):
            error = operation["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": f"#/components/schemas/Errors{status}"}
        if method in ("POST", "PATCH") and "{inquiry_id}/" not in path:
            content = operation["requestBody"]["content"]
            assert {"application/json", "multipart/form-data"} <= set(content)
    upload_body = paths["/api/v1/inquiries/{inquiry_id}/documents"]["post"]["requestBody"]
    assert set(upload_body["content"]) == {"multipart/form-data"}
    created = paths["/api/v1/accounts"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    create_inquiry_doc = paths["/api/v1/inquiries"]["post"]["responses"]
    assert {"201", "403", "404", "400", "422"} <= set(create_inquiry_doc)
