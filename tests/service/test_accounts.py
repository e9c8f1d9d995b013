"""Accounts over real HTTP: create (JSON and multipart), get, patch and every validation rule."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from .api_calls import body, by_pointer, create_account, envelope, form

FULL = {
    "reference_id": "user-42",
    "name_first": "Ada",
    "name_last": "Lovelace",
    "email_address": "ada@example.com",
    "birthdate": "1815-12-10",
}


def test_create_answers_201_with_location_and_every_attribute(http: httpx.Client) -> None:
    """A JSON create returns the account, its Location, and the values it was given."""
    response = http.post("/accounts", json=body(**FULL))
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    data = response.json()["data"]
    assert data["type"] == "account"
    assert data["id"].startswith("act_")
    assert response.headers["location"] == f"/api/v1/accounts/{data['id']}"
    assert {k: data["attributes"][k] for k in FULL} == FULL
    assert data["attributes"]["created_at"] == data["attributes"]["updated_at"]


def test_every_attribute_is_optional(http: httpx.Client) -> None:
    data = create_account(http)
    assert data["attributes"]["reference_id"] is None


def test_multipart_create_equals_json_create(http: httpx.Client) -> None:
    """``data[attributes][NAME]`` fields create the same account a JSON body does."""
    response = http.post("/accounts", files=form(**FULL))
    assert response.status_code == 201, response.text
    assert {k: response.json()["data"]["attributes"][k] for k in FULL} == FULL


def test_get_returns_the_created_account(http: httpx.Client) -> None:
    created = create_account(http, **FULL)
    response = http.get(f"/accounts/{created['id']}")
    assert response.status_code == 200
    assert response.json()["data"] == created


def test_unknown_account_is_404(http: httpx.Client) -> None:
    envelope(http.get("/accounts/act_00000000000000000000000000"), 404, "not_found")
    envelope(http.get("/accounts/whatever"), 404, "not_found")


def test_duplicate_reference_id_is_409_with_pointer(http: httpx.Client) -> None:
    create_account(http, reference_id="dup")
    errors = envelope(http.post("/accounts", json=body(reference_id="dup")), 409)
    assert by_pointer(errors) == {"/data/attributes/reference_id": ("409", "duplicate_resource")}


def test_reference_ids_are_unique_per_organization_only(server, http: httpx.Client) -> None:
    """Another organization may use the same reference id."""
    create_account(http, reference_id="shared")
    with server.client(server.new_key(org="globex")) as other:
        create_account(other, reference_id="shared")


def test_all_field_errors_are_reported_at_once_as_400_when_one_is_about_shape(
    http: httpx.Client,
) -> None:
    """Wrong types and bad values arrive together; the status, on every object, is 400."""
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    response = http.post(
        "/accounts",
        json=body(
            name_first=5,
            name_last=["x"],
            email_address="not-an-email",
            birthdate=tomorrow,
            reference_id="x" * 256,
            nickname="?",
        ),
    )
    errors = envelope(response, 400)
    assert by_pointer(errors) == {
        "/data/attributes/name_first": ("400", "invalid_type"),
        "/data/attributes/name_last": ("400", "invalid_type"),
        "/data/attributes/email_address": ("400", "invalid_value"),
        "/data/attributes/birthdate": ("400", "invalid_value"),
        "/data/attributes/reference_id": ("400", "invalid_value"),
        "/data/attributes/nickname": ("400", "unknown_parameter"),
    }
    by_field = {e["source"]["pointer"]: e["details"] for e in errors}
    assert by_field["/data/attributes/name_first"] == "data.attributes.name_first must be a string"


def test_value_errors_alone_are_422(http: httpx.Client) -> None:
    response = http.post(
        "/accounts", json=body(email_address="ada@", birthdate="1990-02-30", name_first="")
    )
    errors = envelope(response, 422, "invalid_value")
    assert set(by_pointer(errors)) == {
        "/data/attributes/email_address",
        "/data/attributes/birthdate",
    }


@pytest.mark.parametrize(
    "birthdate",
    ["1990-13-01", "1990-02-30", "19900101", "1990-1-1", "today", "2020-01-011", " 1990-01-01"],
)
def test_malformed_dates_are_422(http: httpx.Client, birthdate: str) -> None:
    errors = envelope(http.post("/accounts", json=body(birthdate=birthdate)), 422)
    assert by_pointer(errors) == {"/data/attributes/birthdate": ("422", "invalid_value")}


def test_todays_birthdate_is_accepted(http: httpx.Client) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert create_account(http, birthdate=today)["attributes"]["birthdate"] == today


@pytest.mark.parametrize("email", ["a@b", "a b@example.com", "@example.com", "a@@example.com"])
def test_malformed_emails_are_422(http: httpx.Client, email: str) -> None:
    errors = envelope(http.post("/accounts", json=body(email_address=email)), 422)
    assert by_pointer(errors) == {"/data/attributes/email_address": ("422", "invalid_value")}


@pytest.mark.parametrize("value", ["nul\u0000byte", "lone \ud800 surrogate"])
def test_text_no_database_can_store_is_422_not_500(http: httpx.Client, value: str) -> None:
    payload = '{"data": {"attributes": {"name_first": %s}}}' % (
        '"nul\\u0000byte"' if "\u0000" in value else '"lone \\ud800 surrogate"'
    )
    response = http.post("/accounts", content=payload, headers={"content-type": "application/json"})
    errors = envelope(response, 422)
    assert by_pointer(errors) == {"/data/attributes/name_first": ("422", "invalid_value")}


@pytest.mark.parametrize(
    ("content", "status", "code", "pointer"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"\xff\xfe{}", 400, "invalid_json", None),
        (b"[]", 400, "invalid_type", ""),
        (b"{}", 400, "parameter_missing", "/data"),
        (b'{"data": null}', 400, "invalid_type", "/data"),
        (b'{"data": []}', 400, "invalid_type", "/data"),
        (b'{"data": {}}', 400, "parameter_missing", "/data/attributes"),
        (b'{"data": {"attributes": "x"}}', 400, "invalid_type", "/data/attributes"),
        (b"   ", 400, "parameter_missing", "/data"),
    ],
)
def test_malformed_bodies_are_400_with_a_precise_code(
    http: httpx.Client, content: bytes, status: int, code: str, pointer: str | None
) -> None:
    response = http.post("/accounts", content=content, headers={"content-type": "application/json"})
    errors = envelope(response, status, code)
    assert errors[0].get("source", {}).get("pointer") == pointer


def test_deeply_nested_json_is_400_not_500(http: httpx.Client) -> None:
    for depth in (40, 100_000):
        content = b'{"data": {"attributes": {"name_first": ' + b"[" * depth + b"]" * depth + b"}}}"
        response = http.post(
            "/accounts", content=content, headers={"content-type": "application/json"}
        )
        assert "nested deeper" in envelope(response, 400, "invalid_json")[0]["details"]


def test_unsupported_content_type_is_415(http: httpx.Client) -> None:
    response = http.post("/accounts", content=b"a=b", headers={"content-type": "text/plain"})
    envelope(response, 415, "unsupported_media_type")


def test_multipart_errors_point_at_the_field(http: httpx.Client) -> None:
    files = {
        **form(birthdate="someday", name_first="A"),
        "data[attributes][middle]": (None, "x"),
        "stray": (None, "y"),
    }
    errors = envelope(http.post("/accounts", files=files), 400)
    assert by_pointer(errors) == {
        "/data/attributes/birthdate": ("400", "invalid_value"),
        "/data/attributes/middle": ("400", "unknown_parameter"),
        "/stray": ("400", "unknown_parameter"),
    }


def test_truncated_multipart_is_400(http: httpx.Client) -> None:
    content = (
        b'--b\r\nContent-Disposition: form-data; name="data[attributes][name_first]"\r\n\r\nAd'
    )
    response = http.post(
        "/accounts", content=content, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    envelope(response, 400, "invalid_multipart")


def test_patch_updates_only_the_given_attributes(http: httpx.Client) -> None:
    created = create_account(http, **FULL)
    response = http.patch(
        f"/accounts/{created['id']}", json=body(name_first="Augusta", email_address=None)
    )
    assert response.status_code == 200, response.text
    attributes = response.json()["data"]["attributes"]
    assert attributes["name_first"] == "Augusta"
    assert attributes["email_address"] is None
    assert attributes["name_last"] == "Lovelace"
    assert attributes["updated_at"] > created["attributes"]["updated_at"]
    assert http.get(f"/accounts/{created['id']}").json()["data"]["attributes"] == attributes


def test_patch_with_no_attributes_changes_nothing(http: httpx.Client) -> None:
    created = create_account(http, **FULL)
    response = http.patch(f"/accounts/{created['id']}", json=body())
    assert response.status_code == 200
    assert response.json()["data"] == created


def test_patch_accepts_multipart(http: httpx.Client) -> None:
    created = create_account(http)
    response = http.patch(f"/accounts/{created['id']}", files=form(name_last="Byron"))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attributes"]["name_last"] == "Byron"


def test_patch_validates_like_create(http: httpx.Client) -> None:
    created = create_account(http)
    response = http.patch(f"/accounts/{created['id']}", json=body(birthdate="2999-01-01"))
    errors = envelope(response, 422)
    assert by_pointer(errors) == {"/data/attributes/birthdate": ("422", "invalid_value")}


def test_patch_to_a_taken_reference_id_is_409_and_changes_nothing(http: httpx.Client) -> None:
    create_account(http, reference_id="taken")
    other = create_account(http, reference_id="mine", name_first="Ada")
    response = http.patch(
        f"/accounts/{other['id']}", json=body(reference_id="taken", name_first="Changed")
    )
    errors = envelope(response, 409, "duplicate_resource")
    assert by_pointer(errors) == {"/data/attributes/reference_id": ("409", "duplicate_resource")}
    assert http.get(f"/accounts/{other['id']}").json()["data"] == other


def test_patch_of_unknown_account_is_404(http: httpx.Client) -> None:
    response = http.patch("/accounts/act_00000000000000000000000000", json=body(name_first="x"))
    envelope(response, 404, "not_found")
