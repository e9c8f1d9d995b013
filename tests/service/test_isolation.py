"""Two organizations that reuse each other's idempotency keys and reference ids never meet.

Every read, write, transition, upload and replay across the boundary is a 404
``not_found`` carrying none of the other organization's data: never a 403 (which
would confirm the object exists) and never a replay of the other's answer. Runs
on SQLite and PostgreSQL (``database_url`` is parametrized in this directory).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer
from tests.service.api_calls import body, envelope, upload

KEY = {"Idempotency-Key": "order-42"}
"""The one idempotency key both organizations use for their creates."""

SECRET_NAME = "Ada-of-acme"


@pytest.fixture
def acme(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.new_key("acme")) as client:
        yield client


@pytest.fixture
def globex(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.new_key("globex")) as client:
        yield client


def not_found_without_leak(response: httpx.Response, *leaks: str) -> None:
    envelope(response, 404, "not_found")
    for leak in (SECRET_NAME, *leaks):
        assert leak not in response.text


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    data: dict[str, Any] = response.json()["data"]
    return data


def test_same_idempotency_key_and_reference_id_are_separate_in_each_organization(
    acme: httpx.Client, globex: httpx.Client
) -> None:
    """globex's create with acme's key and reference id runs: no replay, no mismatch, no 409."""
    mine = created(
        acme.post(
            "/accounts", json=body(reference_id="user-1", name_first=SECRET_NAME), headers=KEY
        )
    )
    theirs = created(
        globex.post("/accounts", json=body(reference_id="user-1", name_first="Bo"), headers=KEY)
    )
    assert theirs["id"] != mine["id"]
    assert SECRET_NAME not in str(theirs)
    # Each organization's retry replays its own answer, byte for byte.
    again = globex.post("/accounts", json=body(reference_id="user-1", name_first="Bo"), headers=KEY)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"] == theirs
    # And a different body under that key is a mismatch only against one's own record.
    other = globex.post("/accounts", json=body(reference_id="user-2"), headers=KEY)
    envelope(other, 422, "idempotency_key_mismatch")
    assert SECRET_NAME not in other.text


def test_accounts_of_another_organization_are_404_for_every_operation(
    acme: httpx.Client, globex: httpx.Client
) -> None:
    account = created(acme.post("/accounts", json=body(reference_id="r1", name_first=SECRET_NAME)))
    account_id = account["id"]
    not_found_without_leak(globex.get(f"/accounts/{account_id}"))
    not_found_without_leak(
        globex.patch(f"/accounts/{account_id}", json=body(name_first="X"), headers=KEY)
    )
    listed = globex.get("/accounts", params={"filter[reference_id]": "r1"})
    assert listed.status_code == 200
    assert listed.json()["data"] == []
    # Their cursor is no key to our pages either: it only bounds their own listing.
    paged = globex.get("/accounts", params={"page[after]": "act_zzzzzzzzzzzzzzzzzzzzzzzzzz"})
    assert account_id not in paged.text
    # The owner still sees the account unchanged.
    assert acme.get(f"/accounts/{account_id}").json()["data"] == account


def test_inquiries_documents_and_their_actions_are_404_across_organizations(
    acme: httpx.Client, globex: httpx.Client
) -> None:
    account = created(acme.post("/accounts", json=body(reference_id="r2", name_first=SECRET_NAME)))
    inquiry = created(acme.post("/inquiries", json=body(account_id=account["id"])))
    inquiry_id = inquiry["id"]
    document = created(upload(acme, inquiry_id, b"passport scan of ada"))

    not_found_without_leak(globex.get(f"/inquiries/{inquiry_id}"))
    for action in ("complete", "approve", "decline", "expire"):
        # Each with its own key: a handler's 404 is recorded under globex's key like any answer.
        retry_safe = {"Idempotency-Key": f"transition-{action}"}
        not_found_without_leak(globex.post(f"/inquiries/{inquiry_id}/{action}", headers=retry_safe))
    not_found_without_leak(upload(globex, inquiry_id, b"planted"))
    not_found_without_leak(globex.get(f"/documents/{document['id']}"))
    content = globex.get(f"/documents/{document['id']}/content")
    not_found_without_leak(content, "passport scan")
    # Naming the other organization's account in an inquiry does not join it.
    not_found_without_leak(globex.post("/inquiries", json=body(account_id=account["id"])))
    # The same reference id joins (or creates) an account of one's own, never theirs.
    own = created(globex.post("/inquiries", json=body(reference_id="r2")))
    assert own["attributes"]["account_id"] != account["id"]
    assert globex.get("/inquiries", params={"filter[reference_id]": "r2"}).json()["data"] == [own]

    # Nothing of acme changed.
    assert acme.get(f"/inquiries/{inquiry_id}").json()["data"]["attributes"]["status"] == "created"
    assert acme.get(f"/documents/{document['id']}/content").content == b"passport scan of ada"


def test_a_guessed_id_and_a_foreign_id_answer_alike(
    acme: httpx.Client, globex: httpx.Client
) -> None:
    """The 404 for another organization's object is the 404 for an id that never existed."""
    account_id = created(acme.post("/accounts", json=body(name_first=SECRET_NAME)))["id"]
    never = "act_00000000000000000000000000"
    foreign = globex.get(f"/accounts/{account_id}").json()["errors"][0]
    missing = globex.get(f"/accounts/{never}").json()["errors"][0]
    assert foreign["details"].replace(account_id, "ID") == missing["details"].replace(never, "ID")
