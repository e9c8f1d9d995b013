"""SPEC §3 against the reference service over real HTTP and a real SQLite file."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tests.conftest import LiveServer

from .api_calls import body, create_account, envelope, form


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def accounts_with_reference(http: httpx.Client, reference_id: str) -> list[dict[str, Any]]:
    response = http.get("/accounts", params={"filter[reference_id]": reference_id})
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_create_replays_byte_for_byte(http: httpx.Client) -> None:
    headers = key()
    first = http.post("/accounts", json=body(reference_id="r1", name_first="Ada"), headers=headers)
    again = http.post("/accounts", json=body(name_first="Ada", reference_id="r1"), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(accounts_with_reference(http, "r1")) == 1


def test_multipart_retry_of_a_json_create_replays(http: httpx.Client) -> None:
    """The same parameters sent as multipart fields are the same request."""
    headers = key()
    first = http.post("/accounts", json=body(reference_id="r2", name_first="Ada"), headers=headers)
    again = http.post("/accounts", files=form(reference_id="r2", name_first="Ada"), headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content


def test_mismatch_is_422_and_creates_nothing(http: httpx.Client) -> None:
    headers = key()
    http.post("/accounts", json=body(reference_id="r3"), headers=headers)
    other = http.post("/accounts", json=body(reference_id="r3-other"), headers=headers)
    error = envelope(other, 422, "idempotency_key_mismatch")[0]
    assert "does not match the original" in error["details"]
    assert accounts_with_reference(http, "r3-other") == []


def test_patch_fingerprint_includes_the_concrete_path(http: httpx.Client) -> None:
    one, two = create_account(http)["id"], create_account(http)["id"]
    headers = key()
    first = http.patch(f"/accounts/{one}", json=body(name_first="X"), headers=headers)
    assert first.status_code == 200
    other = http.patch(f"/accounts/{two}", json=body(name_first="X"), headers=headers)
    envelope(other, 422, "idempotency_key_mismatch")
    assert http.get(f"/accounts/{two}").json()["data"]["attributes"]["name_first"] is None


def test_recorded_409_is_replayed_without_a_second_account(http: httpx.Client) -> None:
    create_account(http, reference_id="taken")
    headers = key()
    first = http.post("/accounts", json=body(reference_id="taken"), headers=headers)
    envelope(first, 409, "duplicate_resource")
    again = http.post("/accounts", json=body(reference_id="taken"), headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


def test_validation_400_is_recorded(http: httpx.Client) -> None:
    headers = key()
    first = http.post("/accounts", json=body(name_first=5), headers=headers)
    envelope(first, 400, "invalid_type")
    again = http.post("/accounts", json=body(name_first=5), headers=headers)
    assert again.headers["idempotent-replayed"] == "true"


def test_invalid_key_is_400(http: httpx.Client) -> None:
    response = http.post("/accounts", json=body(), headers={"Idempotency-Key": '""'})
    envelope(response, 400, "invalid_idempotency_key")


def test_key_is_shared_within_an_organization_and_never_across(server: LiveServer) -> None:
    headers = key()
    same_org = [server.client(server.new_key("acme")) for _ in range(2)]
    other_org = server.client(server.new_key("globex"))
    try:
        first = same_org[0].post("/accounts", json=body(reference_id="x"), headers=headers)
        second = same_org[1].post("/accounts", json=body(reference_id="x"), headers=headers)
        foreign = other_org.post("/accounts", json=body(reference_id="x"), headers=headers)
        assert second.headers["idempotent-replayed"] == "true"
        assert second.content == first.content
        assert foreign.status_code == 201
        assert "idempotent-replayed" not in foreign.headers
        assert foreign.json()["data"]["id"] != first.json()["data"]["id"]
        assert other_org.get(f"/accounts/{first.json()['data']['id']}").status_code == 404
    finally:
        for client in (*same_org, other_org):
            client.close()


def test_401_is_not_recorded(server: LiveServer, http: httpx.Client) -> None:
    headers = key()
    with server.client("rsk_key_0000000000000000.wrong") as stranger:
        envelope(stranger.post("/accounts", json=body(reference_id="a"), headers=headers), 401)
    created = http.post("/accounts", json=body(reference_id="a"), headers=headers)
    assert created.status_code == 201
    assert "idempotent-replayed" not in created.headers


def test_429_is_not_recorded(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(rate_limit="2/minute")
    headers = key()
    with server.client(server.new_key()) as http:
        for _ in range(2):
            http.get("/accounts")
        limited = http.post("/accounts", json=body(reference_id="late"), headers=headers)
        envelope(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
    with server.client(server.new_key("other")) as fresh:
        # A different key has its own budget; the first key's record must not exist.
        created = fresh.post("/accounts", json=body(reference_id="late"), headers=headers)
        assert created.status_code == 201


def test_413_is_not_recorded(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(max_body=2048)
    headers = key()
    with server.client(server.new_key()) as http:
        big = http.post("/accounts", json=body(name_first="x" * 4000), headers=headers)
        envelope(big, 413, "payload_too_large")
        assert "ratelimit-limit" not in big.headers
        created = http.post("/accounts", json=body(name_first="ok"), headers=headers)
        assert created.status_code == 201
        assert "idempotent-replayed" not in created.headers


def test_twenty_four_simultaneous_duplicates_create_one_account(
    server: LiveServer, api_key: str
) -> None:
    """Identical creates racing with one key over real HTTP execute exactly once."""
    headers = key()

    def attempt(_: int) -> httpx.Response:
        with server.client(api_key) as http:
            return http.post("/accounts", json=body(reference_id="race"), headers=headers)

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(attempt, range(24)))
    statuses = {r.status_code for r in responses}
    assert statuses <= {201, 409}, statuses
    for response in responses:
        if response.status_code == 409:
            envelope(response, 409, "idempotency_request_in_progress")
            assert int(response.headers["retry-after"]) >= 1
    created = [r for r in responses if r.status_code == 201]
    assert created
    assert len({r.content for r in created}) == 1
    with server.client(api_key) as http:
        assert len(accounts_with_reference(http, "race")) == 1


def test_expired_record_is_purged_and_the_key_is_new(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(idempotency_ttl=1)
    headers = key()
    with server.client(server.new_key()) as http:
        first = http.post("/accounts", json=body(), headers=headers)
        time.sleep(1.2)
        again = http.post("/accounts", json=body(), headers=headers)
        assert again.status_code == 201
        assert "idempotent-replayed" not in again.headers
        assert again.json()["data"]["id"] != first.json()["data"]["id"]


def test_streamed_body_past_the_limit_is_a_plain_413(
    live_server: Callable[..., LiveServer],
) -> None:
    """A chunked body that grows past --max-body is 413 without RateLimit-* headers."""
    server = live_server(max_body=2048)

    def chunks() -> Any:
        yield b'{"data": {"attributes": {"name_first": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}}'

    with server.client(server.new_key()) as http:
        for headers in ({}, key()):
            response = http.post(
                "/accounts",
                content=chunks(),
                headers={"Content-Type": "application/json", **headers},
            )
            envelope(response, 413, "payload_too_large")
            assert not any(name.startswith("ratelimit") for name in response.headers)
