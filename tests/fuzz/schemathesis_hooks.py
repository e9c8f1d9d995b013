"""Schemathesis hooks for the fuzz run, loaded through ``hooks = …`` in schemathesis.toml.

``error_envelope``: every error answer is the SPEC §1 envelope, nothing more. The
schema checks already validate declared error bodies; this one also covers answers
no operation declares (405, 404 for an unknown route) and what a body must never
contain: a traceback, SQL, a file path.

``filter_case``: drops the one kind of generated case that is not what it claims.
"""

from __future__ import annotations

import json
import re

import schemathesis
from schemathesis import CheckContext, HookContext, Response
from schemathesis.generation.case import Case

# What an exception or a driver puts in its text. Bodies echo client input (an
# unknown field, a path), so these are signatures fuzzed input does not produce.
_LEAKS = re.compile(
    r"Traceback \(most recent call last\)|File \"/|site-packages|sqlalche\.me|\[SQL: "
    r"|sqlalchemy\.|asyncpg\.|sqlite3\.|psycopg|aiosqlite|retrysafe/",
)


@schemathesis.check
def error_envelope(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 4xx/5xx is JSON ``{"errors": [...]}``, each object stating this very status."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error answer as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict), "error body is not an object"
    assert set(body) == {"errors"}, f"error body keys: {sorted(body)}"
    errors = body["errors"]
    assert isinstance(errors, list), "errors is not a list"
    assert errors, "errors is empty"
    for error in errors:
        assert {"title", "details", "status", "code"} <= set(error), f"incomplete: {error}"
        assert error["status"] == str(response.status_code), f"status differs: {error}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), f"code: {error['code']!r}"
    if response.status_code >= 500:
        assert "Request-Id" in errors[0]["details"] or response.status_code in (502, 503, 504), (
            "a 500 names the Request-Id"
        )
    leak = _LEAKS.search(response.content.decode("utf-8", "replace"))
    assert leak is None, f"error body leaks internals: {leak.group(0)!r}"
    return True


@schemathesis.hook
def filter_case(context: HookContext, case: Case) -> bool:
    """Skip multipart cases with a field generated as an empty list.

    An empty list serializes to no part at all, so a "kind must not be an array"
    negative case reaches the server as a valid request without ``kind``, and its
    201 would be reported as invalid data accepted.
    """
    if case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return True
    return all(value != [] for value in case.body.values())
