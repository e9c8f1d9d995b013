"""Inquiries over real HTTP: account grouping, quota, filters and the state machine."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .api_calls import body, by_pointer, create_account, create_inquiry, envelope, form

VALID = {
    ("complete", "created"): "completed",
    ("approve", "completed"): "approved",
    ("decline", "completed"): "declined",
    ("expire", "created"): "expired",
    ("expire", "completed"): "expired",
}
STATUSES = ("created", "completed", "approved", "declined", "expired")
ACTIONS = ("complete", "approve", "decline", "expire")
# How to bring a new inquiry to each status.
PATH_TO = {
    "created": (),
    "completed": ("complete",),
    "approved": ("complete", "approve"),
    "declined": ("complete", "decline"),
    "expired": ("expire",),
}


def inquiry_in(http: httpx.Client, status: str) -> str:
    inquiry_id: str = create_inquiry(http, reference_id="subject")["id"]
    for action in PATH_TO[status]:
        assert http.post(f"/inquiries/{inquiry_id}/{action}").status_code == 200
    return inquiry_id


def test_create_by_reference_id_creates_the_account(http: httpx.Client) -> None:
    response = http.post("/inquiries", json=body(reference_id="user-7"))
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["type"] == "inquiry"
    assert data["id"].startswith("inq_")
    assert response.headers["location"] == f"/api/v1/inquiries/{data['id']}"
    assert data["attributes"]["status"] == "created"
    assert data["attributes"]["reference_id"] == "user-7"
    account = http.get(f"/accounts/{data['attributes']['account_id']}").json()["data"]
    assert account["attributes"]["reference_id"] == "user-7"


def test_recreated_inquiries_group_under_one_account(http: httpx.Client) -> None:
    existing = create_account(http, reference_id="user-8")
    first = create_inquiry(http, reference_id="user-8")
    second = create_inquiry(http, reference_id="user-8")
    assert first["attributes"]["account_id"] == existing["id"]
    assert second["attributes"]["account_id"] == existing["id"]
    assert first["id"] != second["id"]
    listed = http.get("/accounts", params={"filter[reference_id]": "user-8"}).json()["data"]
    assert [a["id"] for a in listed] == [existing["id"]]


def test_concurrent_creates_with_a_new_reference_id_make_one_account(
    http: httpx.Client,
) -> None:
    def create(_: int) -> str:
        return str(create_inquiry(http, reference_id="racer")["attributes"]["account_id"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        account_ids = set(pool.map(create, range(20)))
    assert len(account_ids) == 1


def test_create_by_account_id_takes_its_reference_id(http: httpx.Client) -> None:
    account = create_account(http, reference_id="user-9")
    inquiry = create_inquiry(http, account_id=account["id"])
    assert inquiry["attributes"]["account_id"] == account["id"]
    assert inquiry["attributes"]["reference_id"] == "user-9"


def test_create_by_multipart(http: httpx.Client) -> None:
    response = http.post("/inquiries", files=form(reference_id="user-10"))
    assert response.status_code == 201, response.text
    assert response.json()["data"]["attributes"]["reference_id"] == "user-10"


def test_reference_id_or_account_id_is_required(http: httpx.Client) -> None:
    errors = envelope(http.post("/inquiries", json=body()), 400, "parameter_missing")
    assert by_pointer(errors) == {"/data/attributes/reference_id": ("400", "parameter_missing")}
    envelope(http.post("/inquiries", json=body(reference_id=None)), 400, "parameter_missing")


def test_reference_id_and_account_id_together_are_400(http: httpx.Client) -> None:
    account = create_account(http, reference_id="both")
    response = http.post("/inquiries", json=body(reference_id="both", account_id=account["id"]))
    errors = envelope(response, 400, "invalid_parameter")
    assert by_pointer(errors) == {"/data/attributes/account_id": ("400", "invalid_parameter")}


def test_inquiry_fields_are_validated_together(http: httpx.Client) -> None:
    response = http.post("/inquiries", json=body(reference_id=7, status="approved"))
    assert by_pointer(envelope(response, 400)) == {
        "/data/attributes/reference_id": ("400", "invalid_type"),
        "/data/attributes/status": ("400", "unknown_parameter"),
    }


def test_unknown_account_id_is_404_with_pointer_and_uses_no_quota(server, http) -> None:
    server.set_quota("acme", 1)
    response = http.post("/inquiries", json=body(account_id="act_00000000000000000000000000"))
    errors = envelope(response, 404, "not_found")
    assert by_pointer(errors) == {"/data/attributes/account_id": ("404", "not_found")}
    create_inquiry(http, reference_id="still-allowed")


def test_other_organizations_account_id_is_404(server, http: httpx.Client) -> None:
    with server.client(server.new_key(org="globex")) as other:
        foreign = create_account(other, reference_id="theirs")
    response = http.post("/inquiries", json=body(account_id=foreign["id"]))
    envelope(response, 404, "not_found")


def test_quota_is_enforced_with_quota_headers(server, http: httpx.Client) -> None:
    """Each create reports what is left; past the quota the answer is 403 and nothing is made."""
    server.set_quota("acme", 2)
    first = http.post("/inquiries", json=body(reference_id="q"))
    assert first.status_code == 201
    assert first.headers["quotalimit-limit"] == "2"
    assert first.headers["quotalimit-remaining"] == "1"
    second = http.post("/inquiries", json=body(reference_id="q"))
    assert second.headers["quotalimit-remaining"] == "0"
    refused = http.post("/inquiries", json=body(reference_id="someone-new"))
    envelope(refused, 403, "quota_exceeded")
    assert refused.headers["quotalimit-limit"] == "2"
    assert refused.headers["quotalimit-remaining"] == "0"
    # The refused request created neither an inquiry nor the account it named.
    assert len(http.get("/inquiries").json()["data"]) == 2
    assert (
        http.get("/accounts", params={"filter[reference_id]": "someone-new"}).json()["data"] == []
    )
    got = http.get(f"/inquiries/{first.json()['data']['id']}")
    assert got.headers["quotalimit-limit"] == "2"
    assert got.headers["quotalimit-remaining"] == "0"


def test_concurrent_creates_never_exceed_the_quota(server, http: httpx.Client) -> None:
    server.set_quota("acme", 5)

    def create(n: int) -> int:
        return http.post("/inquiries", json=body(reference_id=f"c{n}")).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(create, range(12)))
    assert sorted(statuses) == [201] * 5 + [403] * 7


def test_quota_is_per_organization(server, http: httpx.Client) -> None:
    server.set_quota("acme", 0)
    envelope(http.post("/inquiries", json=body(reference_id="x")), 403, "quota_exceeded")
    with server.client(server.new_key(org="globex")) as other:
        response = other.post("/inquiries", json=body(reference_id="x"))
    assert response.status_code == 201
    assert "quotalimit-limit" not in response.headers


def test_unlimited_organizations_get_no_quota_headers(http: httpx.Client) -> None:
    response = http.post("/inquiries", json=body(reference_id="free"))
    assert "quotalimit-limit" not in response.headers
    got = http.get(f"/inquiries/{response.json()['data']['id']}")
    assert "quotalimit-remaining" not in got.headers


def test_get_and_filters(http: httpx.Client) -> None:
    a1 = create_inquiry(http, reference_id="a")
    a2 = create_inquiry(http, reference_id="a")
    b1 = create_inquiry(http, reference_id="b")
    assert http.post(f"/inquiries/{a2['id']}/complete").status_code == 200
    assert http.get(f"/inquiries/{a1['id']}").json()["data"] == a1

    def ids(**params: str) -> list[str]:
        response = http.get("/inquiries", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert ids() == [b1["id"], a2["id"], a1["id"]]
    assert ids(**{"filter[reference_id]": "a"}) == [a2["id"], a1["id"]]
    assert ids(**{"filter[status]": "created"}) == [b1["id"], a1["id"]]
    assert ids(**{"filter[status]": "completed", "filter[reference_id]": "a"}) == [a2["id"]]
    assert ids(**{"filter[status]": "approved"}) == []


def test_unknown_status_filter_is_400(http: httpx.Client) -> None:
    envelope(http.get("/inquiries", params={"filter[status]": "done"}), 400, "invalid_parameter")


def test_unknown_inquiry_is_404(http: httpx.Client) -> None:
    envelope(http.get("/inquiries/inq_00000000000000000000000000"), 404, "not_found")
    envelope(http.post("/inquiries/inq_00000000000000000000000000/complete"), 404, "not_found")


@pytest.mark.parametrize(("action", "start"), sorted(VALID))
def test_valid_transitions(http: httpx.Client, action: str, start: str) -> None:
    inquiry_id = inquiry_in(http, start)
    response = http.post(f"/inquiries/{inquiry_id}/{action}")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attributes"]["status"] == VALID[action, start]
    assert (
        http.get(f"/inquiries/{inquiry_id}").json()["data"]["attributes"]["status"]
        == (VALID[action, start])
    )


@pytest.mark.parametrize(
    ("action", "start"),
    [pair for pair in itertools.product(ACTIONS, STATUSES) if pair not in VALID],
)
def test_invalid_transitions_are_422_naming_both_statuses(
    http: httpx.Client, action: str, start: str
) -> None:
    inquiry_id = inquiry_in(http, start)
    target = {"complete": "completed", "approve": "approved", "decline": "declined"}.get(
        action, "expired"
    )
    errors = envelope(
        http.post(f"/inquiries/{inquiry_id}/{action}"), 422, "invalid_state_transition"
    )
    assert start in errors[0]["details"]
    assert target in errors[0]["details"]
    assert http.get(f"/inquiries/{inquiry_id}").json()["data"]["attributes"]["status"] == start


def test_concurrent_transitions_have_one_winner(http: httpx.Client) -> None:
    inquiry_id = inquiry_in(http, "completed")
    actions = ["approve", "decline"] * 8

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda a: http.post(f"/inquiries/{inquiry_id}/{a}"), actions))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    assert all(r.status_code == 422 for r in responses if r not in winners)
    final = http.get(f"/inquiries/{inquiry_id}").json()["data"]["attributes"]["status"]
    assert final == winners[0].json()["data"]["attributes"]["status"]
