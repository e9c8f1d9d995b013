"""The example apps, served as real processes, through the retry-safety scenario list.

Each example (FastAPI, Starlette, Litestar) runs on the memory, SQLite, PostgreSQL and
Redis stores. On the SQL stores its orders table lives in the store's database and the
create handler writes it in the record's transaction (FastAPI through ``session()``,
Starlette through ``transaction()``, Litestar through ``asyncpg_connection()`` on
PostgreSQL); on memory and Redis the orders live in the app's own SQLite table, which
those stores cannot join (the README says what that leaves). Every scenario uses a
fresh credential, hence its own tenant.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .conftest import REQUEST_TIMEOUT, Example

JSON = {"Content-Type": "application/json"}


def key() -> str:
    return f"order-{uuid.uuid4().hex}"


def post(
    http: httpx.Client, idempotency_key: str | None, body: dict[str, Any] | bytes
) -> httpx.Response:
    headers = dict(JSON)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post("/orders", content=content, headers=headers)


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    """Same status, same bytes, same Content-Type and Location, marked as a replay."""
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers.get("location") == first.headers.get("location")
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


def test_concurrent_identical_requests_run_once(example: Example) -> None:
    k, calls, orders = key(), example.calls(), len(example.order_ids())
    credential = example.credential()
    barrier = threading.Barrier(8)

    def send(_: int) -> httpx.Response:
        with example.client(credential) as http:
            barrier.wait()
            return post(http, k, {"sku": "book", "quantity": 1, "delay": 0.5})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [a for a in answers if a.status_code == 201]
    assert len({a.content for a in created}) == 1
    assert example.calls() == calls + 1
    assert len(example.order_ids()) == orders + 1
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["errors"][0]["code"] == "idempotency_request_in_progress"


def test_a_replay_is_byte_identical(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, {"sku": "book", "quantity": 2})
        calls = example.calls()
        replay = post(http, k, {"sku": "book", "quantity": 2})
    assert first.status_code == 201
    assert first.headers["location"] == f"/orders/{first.json()['id']}"
    assert_replay_of(replay, first)
    assert example.calls() == calls


def test_the_same_key_with_other_parameters_is_a_mismatch(example: Example) -> None:
    k = key()
    with example.client() as http:
        post(http, k, {"sku": "book", "quantity": 2})
        other = post(http, k, {"sku": "book", "quantity": 3})
    assert other.status_code == 422
    assert other.json()["errors"][0]["code"] == "idempotency_key_mismatch"


def test_a_4xx_is_recorded_and_replayed(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, {"sku": "book", "quantity": 0})
        calls = example.calls()
        replay = post(http, k, {"sku": "book", "quantity": 0})
    assert first.status_code == 422
    assert first.json()["errors"][0]["details"] == "quantity must be at least 1."
    assert_replay_of(replay, first)
    assert example.calls() == calls


def test_a_validation_error_is_the_envelope_and_replayed(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, {"sku": 7, "quantity": 1})
        replay = post(http, k, {"sku": 7, "quantity": 1})
    assert first.status_code == 400
    [error] = first.json()["errors"]
    assert (error["code"], error["source"]) == ("invalid_type", {"pointer": "/sku"})
    assert_replay_of(replay, first)


def test_a_5xx_is_recorded_and_replayed(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, {"sku": "upstream-down", "quantity": 1})
        calls = example.calls()
        replay = post(http, k, {"sku": "upstream-down", "quantity": 1})
    assert first.status_code == 502
    [error] = first.json()["errors"]
    assert error["code"] == "bad_gateway"
    assert first.headers["request-id"] in error["details"]
    assert_replay_of(replay, first)
    assert example.calls() == calls


def test_a_handler_exception_is_recorded_as_the_envelopes_500(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, {"sku": "explode", "quantity": 1})
        calls = example.calls()
        replay = post(http, k, {"sku": "explode", "quantity": 1})
    assert first.status_code == 500
    [error] = first.json()["errors"]
    assert error["code"] == "internal_error"
    assert first.headers["request-id"] in error["details"]
    assert "handler failed" not in first.text
    assert_replay_of(replay, first)
    assert example.calls() == calls


def test_two_tenants_never_share_a_key(example: Example) -> None:
    k = key()
    with example.client() as alice, example.client() as bob:
        for_alice = post(alice, k, {"sku": "book", "quantity": 1})
        for_bob = post(bob, k, {"sku": "book", "quantity": 1})
        alice_again = post(alice, k, {"sku": "book", "quantity": 1})
    assert (for_alice.status_code, for_bob.status_code) == (201, 201)
    assert for_alice.json()["id"] != for_bob.json()["id"]
    assert "idempotent-replayed" not in for_bob.headers
    assert_replay_of(alice_again, for_alice)


def test_the_same_key_in_flight_is_409_with_retry_after(example: Example) -> None:
    k, credential = key(), example.credential()
    body = {"sku": "book", "quantity": 1, "delay": 1.0}
    with ThreadPoolExecutor(max_workers=1) as pool:
        calls = example.calls()

        def slow() -> httpx.Response:
            with example.client(credential) as http:
                return post(http, k, body)

        first = pool.submit(slow)
        deadline = time.monotonic() + 10
        while example.calls() == calls and time.monotonic() < deadline:
            time.sleep(0.05)
        with example.client(credential) as http:
            during = post(http, k, body)
        original = first.result(timeout=30)
    assert during.status_code == 409
    assert during.json()["errors"][0]["code"] == "idempotency_request_in_progress"
    assert int(during.headers["retry-after"]) >= 1
    with example.client(credential) as http:
        assert_replay_of(post(http, k, body), original)


def test_a_get_ignores_the_idempotency_key(example: Example) -> None:
    k = key()
    with example.client() as http:
        before = http.get("/orders", headers={"Idempotency-Key": k})
        post(http, None, {"sku": "book", "quantity": 1})
        after = http.get("/orders", headers={"Idempotency-Key": k})
    assert before.status_code == after.status_code == 200
    assert len(after.json()["ids"]) == len(before.json()["ids"]) + 1
    assert "idempotent-replayed" not in after.headers


def test_a_one_megabyte_body_is_replayed_intact(example: Example) -> None:
    k, note = key(), "x" * 1_000_000
    with example.client() as http:
        first = post(http, k, {"sku": "book", "quantity": 1, "note": note})
        replay = post(http, k, {"sku": "book", "quantity": 1, "note": note})
    assert first.status_code == 201
    assert first.json()["note"] == note
    assert len(replay.content) > 1_000_000
    assert_replay_of(replay, first)


def test_reordered_json_keys_are_the_same_request(example: Example) -> None:
    k = key()
    with example.client() as http:
        first = post(http, k, b'{"sku": "book", "quantity": 4}')
        reordered = post(http, k, b'{"quantity": 4,\n "sku": "book"}')
    assert first.status_code == 201
    assert_replay_of(reordered, first)


def test_a_retry_after_sigkill_mid_request_runs_exactly_once(example: Example) -> None:
    """The server dies while the handler runs, before it wrote: the retry creates one order.

    On Redis the dead holder's claim outlives it by its lease (the deadline + 5 s), so
    the retry is told 409 with Retry-After until then; the memory store died with the
    process, and on SQLite and PostgreSQL the claim was only in the transaction that
    died with it. Either way the order is created once, by the retry, which the
    module's second process of the app (on the same store and files) serves. (Last in
    this module: the first process is gone after it.)
    """
    k, credential = key(), example.credential()
    body = {"sku": "book", "quantity": 1, "delay": 1.0}
    orders, calls = example.order_ids(), example.calls()

    def doomed() -> None:
        # The server dies under this request: a transport error is what a client sees.
        with example.client(credential) as http, contextlib.suppress(httpx.TransportError):
            post(http, k, body)

    thread = threading.Thread(target=doomed)
    thread.start()
    deadline = time.monotonic() + 10
    while example.calls() == calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert example.calls() == calls + 1
    example.fail_over()
    thread.join(timeout=30)
    assert example.order_ids() == orders

    refusals = 0
    give_up = time.monotonic() + REQUEST_TIMEOUT + 5 + 15
    with example.client(credential) as http:
        while True:
            answer = post(http, k, body)  # the same request, as a retry must be
            if answer.status_code != 409 or time.monotonic() > give_up:
                break
            refusals += 1
            time.sleep(int(answer.headers["retry-after"]))
        replay = post(http, k, body)
    assert answer.status_code == 201, answer.text
    assert "idempotent-replayed" not in answer.headers
    assert sorted(example.order_ids()) == sorted([*orders, answer.json()["id"]])
    assert_replay_of(replay, answer)
    if example.store != "redis":
        assert refusals == 0
