"""Regression tests for what the OpenAPI fuzz run found, one per fix."""

from __future__ import annotations

import httpx
import pytest

# Once per database: the NUL finding only ever failed on PostgreSQL.
from tests.service.conftest import database_url, postgres_copies  # noqa: F401


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def test_unknown_attribute_pointer_is_an_escaped_json_pointer(http: httpx.Client) -> None:
    """A client-chosen name with ``/`` or ``~`` is escaped (RFC 6901), so the pointer finds it."""
    name = "a/b~c"
    response = http.post("/accounts", json={"data": {"attributes": {name: "x"}}})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "unknown_parameter"
    pointer = error["source"]["pointer"]
    assert pointer == "/data/attributes/a~1b~0c"
    assert [_unescape(token) for token in pointer.split("/")[1:]] == ["data", "attributes", name]
    assert "data.attributes.a/b~c" in error["details"]


def test_unknown_form_field_pointer_is_escaped_too(http: httpx.Client) -> None:
    response = http.post("/accounts", files={"data[attributes][x/y]": (None, "1")})
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["pointer"] == "/data/attributes/x~1y"


@pytest.mark.parametrize(
    "query",
    [
        "/accounts?filter[reference_id]=a%00b",
        "/inquiries?filter[reference_id]=%00",
        "/api-logs?filter[idempotency_key]=key%00",
        "/api-logs?filter[request_id]=req%00",
    ],
)
def test_a_text_filter_holding_nul_is_a_400_not_a_500(http: httpx.Client, query: str) -> None:
    """PostgreSQL cannot compare text holding NUL: the value is refused before any query."""
    response = http.get(query)
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == "invalid_parameter"
    assert error["details"].endswith("must not contain NUL characters.")
