"""Explicit limits on what a client nests and packs into a body: JSON depth, numbers, form parts.

Each one answers the SPEC §1 envelope with a 4xx, never a 500, over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.conftest import LiveServer
from tests.service.api_calls import body, envelope


@pytest.fixture
def http(live_server: Callable[..., LiveServer]) -> Iterator[httpx.Client]:
    server = live_server(max_json_depth=8, max_body=64 * 1024)
    with server.client(server.new_key()) as client:
        yield client


def test_deep_json_is_400(http: httpx.Client) -> None:
    nested: object = "x"
    for _ in range(9):
        nested = {"a": nested}
    response = http.post("/accounts", json={"data": {"attributes": nested}})
    errors = envelope(response, 400, "invalid_json")
    assert "nested deeper than 8" in errors[0]["details"]


def test_json_nested_past_the_recursion_limit_is_400(http: httpx.Client) -> None:
    """Deep enough to blow Python's recursion limit inside the parser: still a 400."""
    deep = b"[" * 30_000 + b"]" * 30_000  # 60 KB: under max_body, far past recursion
    response = http.post("/accounts", content=deep, headers={"Content-Type": "application/json"})
    envelope(response, 400, "invalid_json")


def test_an_integer_with_too_many_digits_is_400_not_500(http: httpx.Client) -> None:
    """Python refuses to convert a >4300-digit literal; that used to escape as a 500."""
    raw = b'{"data": {"attributes": {"name_first": ' + b"1" * 5000 + b"}}}"
    for headers in ({}, {"Idempotency-Key": "big-number"}):
        response = http.post(
            "/accounts", content=raw, headers={"Content-Type": "application/json", **headers}
        )
        errors = envelope(response, 400, "invalid_json")
        assert "too many digits" in errors[0]["details"]


def test_body_over_max_body_is_413(http: httpx.Client) -> None:
    response = http.post("/accounts", json=body(name_first="a" * 70_000))
    envelope(response, 413, "payload_too_large")


def test_more_than_64_form_parts_is_400(http: httpx.Client) -> None:
    files = [(f"data[attributes][name_first]{i}", (None, "x")) for i in range(65)]
    response = http.post("/accounts", files=files)
    errors = envelope(response, 400, "invalid_multipart")
    assert "more than 64 parts" in errors[0]["details"]


def test_huge_part_headers_are_400_by_python_multipart_s_own_bound(http: httpx.Client) -> None:
    boundary = "b0undary"
    content = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="data[attributes][name_first]"\r\n'
        f"X-Padding: {'a' * 9000}\r\n\r\n"
        f"Ada\r\n--{boundary}--\r\n"
    ).encode()
    response = http.post(
        "/accounts",
        content=content,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    errors = envelope(response, 400, "invalid_multipart")
    assert "header" in errors[0]["details"].lower()
