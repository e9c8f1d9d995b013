"""A lone surrogate in a JSON string gets the same answer with and without an Idempotency-Key.

``"\\ud800"`` is valid JSON syntax but no Unicode text: the handler answers it
422 ``invalid_value``. The fingerprint used to encode the parsed body as UTF-8
and raise on it, so the keyed request became an unrecorded 500 instead.
"""

from __future__ import annotations

import httpx
from tests.conftest import LiveServer

BODY = b'{"data": {"attributes": {"name_first": "\\ud800"}}}'
JSON = {"Content-Type": "application/json"}


def test_the_same_request_gets_the_same_answer_with_or_without_a_key(
    server: LiveServer, http: httpx.Client
) -> None:
    unkeyed = http.post("/accounts", content=BODY, headers=JSON)
    assert unkeyed.status_code == 422, unkeyed.text
    keyed = http.post("/accounts", content=BODY, headers={**JSON, "Idempotency-Key": "surrogate"})
    assert keyed.status_code == unkeyed.status_code, keyed.text
    assert keyed.json()["errors"] == unkeyed.json()["errors"]
    # Recorded like any handler answer: the retry replays it.
    replay = http.post("/accounts", content=BODY, headers={**JSON, "Idempotency-Key": "surrogate"})
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.content == keyed.content
