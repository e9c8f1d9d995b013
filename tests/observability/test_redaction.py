"""What an API-log entry keeps of a body: whole JSON with secrets replaced, nothing else."""

from __future__ import annotations

import json

import pytest

from retrysafe.observability.redaction import REDACTED, loggable_body


def test_secret_members_are_replaced_at_any_depth() -> None:
    body = {
        "data": {"attributes": {"name_first": "Ada", "Password": "p", "api_key": "k"}},
        "items": [{"access_token": "t", "kind": "x"}],
        "client_secret": {"nested": "whole value"},
    }
    kept = loggable_body(json.dumps(body).encode(), "application/json; charset=utf-8", 1000)
    assert kept is not None
    assert json.loads(kept) == {
        "data": {"attributes": {"name_first": "Ada", "Password": REDACTED, "api_key": REDACTED}},
        "items": [{"access_token": REDACTED, "kind": "x"}],
        "client_secret": REDACTED,
    }


@pytest.mark.parametrize(
    ("body", "content_type", "kept"),
    [
        (b"", "application/json", None),
        (None, "application/json", None),
        (
            b"--b\r\nfile bytes",
            "multipart/form-data; boundary=b",
            "[not stored: multipart/form-data body]",
        ),
        (b"raw", None, "[not stored: untyped body]"),
        (b"{not json", "application/json", "[not stored: invalid JSON]"),
        (b'{"a":"' + b"x" * 50 + b'"}', "application/json", "[not stored: larger than 20 bytes]"),
        (b'{"a":1}', "application/vnd.api+json", '{"a":1}'),
    ],
)
def test_only_whole_json_is_kept(
    body: bytes | None, content_type: str | None, kept: str | None
) -> None:
    assert loggable_body(body, content_type, 20) == kept
