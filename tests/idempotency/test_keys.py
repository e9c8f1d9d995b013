"""Which Idempotency-Key header values are keys, and which key they name."""

from __future__ import annotations

import pytest

from retrysafe.idempotency.keys import InvalidIdempotencyKey, parse_idempotency_key


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"abc", "abc"),
        (b'"abc"', "abc"),
        (b"  8e03978e-40d5-43e8-bc93-6894a57f9324 ", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (b'"a\\"b"', 'a"b'),
        (b"x" * 255, "x" * 255),
        (b'a"b', 'a"b'),
    ],
)
def test_valid_keys(raw: bytes, key: str) -> None:
    """Plain and IETF-quoted forms name the same key."""
    assert parse_idempotency_key(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b'""',
        b"x" * 256,
        b"has space",
        b"tab\tinside",
        b"line\n",
        b"del\x7f",
        "caf\u00e9".encode(),
        b'"bad\\x"',
    ],
)
def test_invalid_keys_are_refused(raw: bytes) -> None:
    """Empty, too long, unquoted spaces, non-ASCII and bad escapes name no key."""
    with pytest.raises(InvalidIdempotencyKey, match="1 to 255 visible ASCII characters"):
        parse_idempotency_key(raw)
