"""Object properties a client must not set are refused, not ignored (OWASP API3: mass assignment).

``id``, ``organization_id``, ``created_at``, ``status``… are the server's. A body
naming them is a 400 ``unknown_parameter`` that changes nothing, in JSON and in forms.
"""

from __future__ import annotations

import httpx
import pytest
from tests.service.api_calls import body, envelope, form

SERVER_OWNED = {
    "id": "act_00000000000000000000000000",
    "organization_id": "org_someone_else",
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
}


@pytest.mark.parametrize(("name", "value"), sorted(SERVER_OWNED.items()))
def test_create_refuses_server_owned_attributes(http: httpx.Client, name: str, value: str) -> None:
    errors = envelope(http.post("/accounts", json=body(**{name: value})), 400, "unknown_parameter")
    assert errors[0]["source"]["pointer"] == f"/data/attributes/{name}"
    envelope(http.post("/accounts", files=form(**{name: value})), 400, "unknown_parameter")
    assert http.get("/accounts").json()["data"] == []


def test_update_cannot_move_an_account_or_rewrite_its_history(http: httpx.Client) -> None:
    created = http.post("/accounts", json=body(name_first="Ada")).json()["data"]
    for name, value in SERVER_OWNED.items():
        response = http.patch(f"/accounts/{created['id']}", json=body(**{name: value}))
        envelope(response, 400, "unknown_parameter")
    assert http.get(f"/accounts/{created['id']}").json()["data"] == created


def test_an_inquiry_status_is_only_changed_by_its_transitions(http: httpx.Client) -> None:
    response = http.post("/inquiries", json=body(reference_id="r1", status="approved"))
    envelope(response, 400, "unknown_parameter")
