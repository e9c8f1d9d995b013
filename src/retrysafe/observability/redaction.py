"""What of a request or response body an API-log entry may keep: redacted JSON, size-capped."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

__all__ = ["REDACTED", "SECRET_MARKERS", "loggable_body"]

REDACTED = "[redacted]"

SECRET_MARKERS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    "ssn",
    "card_number",
    "cvv",
)
"""A JSON member whose name contains one of these (any case) has its value replaced."""


def loggable_body(body: bytes | None, content_type: str | None, limit: int) -> str | None:
    """The text an API-log entry stores for ``body``, or ``None`` when there is nothing.

    Only JSON is kept, and only whole: a body cut at ``limit`` could end inside a
    secret that redaction no longer recognizes, so an oversized body is replaced by
    a note. Other media types (a multipart upload carries files) are never kept.
    """
    if not body:
        return None
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return f"[not stored: {media_type or 'untyped'} body]"
    if len(body) > limit:
        return f"[not stored: larger than {limit} bytes]"
    try:
        document = json.loads(body)
    except ValueError:
        return "[not stored: invalid JSON]"
    return json.dumps(_redacted(document), separators=(",", ":"), ensure_ascii=False)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: REDACTED if _is_secret(name) else _redacted(member)
            for name, member in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


@lru_cache(maxsize=1024)
def _is_secret(name: str) -> bool:
    # An API's bodies repeat the same few member names: each is judged once, not twelve
    # substring searches per member per entry, which were most of an entry's cost.
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)
