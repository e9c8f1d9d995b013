"""Over the real app: requests the handler answers differently are not replayed for each other.

Each pair used to share a fingerprint, so the second request, sent with the
first one's key, replayed the first answer instead of getting its own (422
``idempotency_key_mismatch``, since the key now names another request).
"""

from __future__ import annotations

import httpx
from tests.conftest import LiveServer
from tests.service.api_calls import create_inquiry


def _mismatch(response: httpx.Response) -> bool:
    return (
        response.status_code == 422
        and response.json()["errors"][0]["code"] == "idempotency_key_mismatch"
    )


def test_a_renamed_upload_under_the_same_key_is_not_a_replay(
    server: LiveServer, http: httpx.Client
) -> None:
    inquiry_id = create_inquiry(http, reference_id="fp-user")["id"]
    path = f"/inquiries/{inquiry_id}/documents"
    key = {"Idempotency-Key": "upload-1"}
    first = http.post(path, files={"file": ("passport.png", b"\x89PNG", "image/png")}, headers=key)
    assert first.status_code == 201, first.text
    again = http.post(path, files={"file": ("passport.png", b"\x89PNG", "image/png")}, headers=key)
    assert again.headers.get("idempotent-replayed") == "true"
    renamed = http.post(path, files={"file": ("selfie.png", b"\x89PNG", "image/png")}, headers=key)
    assert _mismatch(renamed), renamed.text
    retyped = http.post(
        path, files={"file": ("passport.png", b"\x89PNG", "image/jpeg")}, headers=key
    )
    assert _mismatch(retyped), retyped.text


def test_a_name_with_trailing_junk_is_not_the_attribute(
    server: LiveServer, http: httpx.Client
) -> None:
    key = {"Idempotency-Key": "junk-1"}
    created = http.post(
        "/accounts", files={"data[attributes][name_first]": (None, "Ada")}, headers=key
    )
    assert created.status_code == 201, created.text
    junk = http.post(
        "/accounts", files={"data[attributes][name_first]junk": (None, "Ada")}, headers=key
    )
    assert _mismatch(junk), junk.text
    unkeyed = http.post("/accounts", files={"data[attributes][name_first]junk": (None, "Ada")})
    assert unkeyed.status_code == 400
    assert unkeyed.json()["errors"][0]["code"] == "unknown_parameter"


def test_an_empty_form_and_an_empty_json_object_are_different_requests(
    server: LiveServer, http: httpx.Client
) -> None:
    """The empty form creates an account; ``{}`` is 400: one must not replay the other."""
    key = {"Idempotency-Key": "empty-1"}
    empty_form = b"--b0undary--\r\n"
    created = http.post(
        "/accounts",
        content=empty_form,
        headers={**key, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert created.status_code == 201, created.text
    empty_object = http.post("/accounts", json={}, headers=key)
    assert _mismatch(empty_object), empty_object.text
