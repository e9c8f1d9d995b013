"""What an API-log entry keeps of a body: whole JSON with secrets replaced, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrysafe.observability.redaction import REDACTED, SECRET_MARKERS, loggable_body


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


def _walked(value: Any) -> Any:
    """The rule itself, applied to every member, uncached: what loggable_body must keep."""
    if isinstance(value, dict):
        return {
            name: REDACTED
            if any(marker in name.lower() for marker in SECRET_MARKERS)
            else _walked(member)
            for name, member in value.items()
        }
    if isinstance(value, list):
        return [_walked(item) for item in value]
    return value


# Names built from the markers in any case, next to letters whose lower case is ASCII
# (the Kelvin sign lowers to "k"), non-ASCII text and characters JSON escapes.
_NAME = st.lists(
    st.sampled_from([*SECRET_MARKERS, "TOKEN", "Pass", "word", "to\u212aen", "api_\u212aey"])
    | st.text(alphabet='aKk_\u212a\u00e9\\"/\n', max_size=4),
    max_size=3,
).map("".join)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAME, inner, max_size=4),
    max_leaves=12,
)


@given(document=_JSON, ascii_only=st.booleans())
def test_what_is_kept_is_the_rule_applied_to_every_name(document: Any, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    kept = loggable_body(body, "application/json", 1 << 20)
    assert kept == json.dumps(_walked(document), separators=(",", ":"), ensure_ascii=False)


def test_an_escaped_or_non_ascii_secret_name_is_still_redacted() -> None:
    # "\u0074oken" is "token" once decoded; "to\u212aen" lowers to "token".
    for body in (b'{"\\u0074oken":"t"}', '{"to\u212aen":"t"}'.encode()):
        assert (
            loggable_body(body, "application/json", 100)
            == f'{{"{json.loads(body).popitem()[0]}":"{REDACTED}"}}'
        )
