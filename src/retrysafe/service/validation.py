"""Field validators shared by JSON and multipart bodies: all errors at once, each with a pointer.

Shape problems (wrong type, unknown or missing attribute) are 400; well-formed but
unacceptable values (too long, bad email, impossible or future date) are 422.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from retrysafe.envelope import FieldErrors

ATTRIBUTES_POINTER = "/data/attributes/"

# Deliberately simple: one "@", no whitespace, a dotted domain. Deliverability is the
# mail server's to judge; this only catches values that cannot be an address at all.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Invalid:
    """Marks a value that already produced a field error, so it is left out of the result."""


INVALID = _Invalid()


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute: a string (or null, when ``nullable``) checked by ``check``."""

    max_length: int
    nullable: bool = True
    min_length: int = 0
    check: Callable[[str], str | None] | None = None
    """Returns a sentence describing why the string is unacceptable (422), or ``None``."""


Schema = Mapping[str, Field]


def email_problem(value: str) -> str | None:
    if _EMAIL.fullmatch(value) is None:
        return "must be an email address such as ada@example.com"
    return None


def past_date_problem(value: str) -> str | None:
    if _ISO_DATE.fullmatch(value) is None:
        return "must be a date written YYYY-MM-DD"
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return "must be a real calendar date (YYYY-MM-DD)"
    # UTC's today: the server cannot know the caller's time zone, and a stable rule
    # beats one that changes with where the request was routed.
    if day > datetime.now(UTC).date():
        return "must not be in the future"
    return None


def validate(
    attributes: Mapping[str, object],
    schema: Schema,
    errors: FieldErrors,
    *,
    pointer_prefix: str = ATTRIBUTES_POINTER,
) -> dict[str, str | None]:
    """Check every attribute against ``schema``; return the clean ones, record the rest.

    Unknown attributes are a 400 ``unknown_parameter``: silently dropping a misspelt
    ``reference-id`` would create a record the caller cannot find again.
    """
    clean: dict[str, str | None] = {}
    for name, value in attributes.items():
        pointer = pointer_prefix + pointer_token(name)
        label = pointer_prefix.strip("/").replace("/", ".") + "." + name
        field = schema.get(name)
        if field is None:
            allowed = ", ".join(sorted(schema)) or "none"
            errors.add(
                400,
                "unknown_parameter",
                f"{label} is not a known attribute (allowed: {allowed})",
                pointer,
            )
            continue
        result = check_value(value, field, label, pointer, errors)
        if not isinstance(result, _Invalid):
            clean[name] = result
    return clean


def pointer_token(name: str) -> str:
    """``name`` as one JSON-pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``).

    Names are the client's (an unknown attribute is quoted back), so without this a
    name holding ``/`` would point somewhere else and one holding ``~`` nowhere.
    """
    return name.replace("~", "~0").replace("/", "~1")


def check_value(
    value: object, field: Field, label: str, pointer: str, errors: FieldErrors
) -> str | _Invalid | None:
    if value is None:
        if field.nullable:
            return None
        errors.add(400, "invalid_type", f"{label} must be a string, not null", pointer)
        return INVALID
    if not isinstance(value, str):
        errors.add(400, "invalid_type", f"{label} must be a string", pointer)
        return INVALID
    problem = _text_problem(value, field)
    if problem is None and field.check is not None:
        problem = field.check(value)
    if problem is not None:
        errors.add(422, "invalid_value", f"{label} {problem}", pointer)
        return INVALID
    return value


def _text_problem(value: str, field: Field) -> str | None:
    if len(value) > field.max_length:
        return f"must be at most {field.max_length} characters long"
    if len(value) < field.min_length:
        return f"must be at least {field.min_length} character(s) long"
    # PostgreSQL cannot store NUL in text, and unpaired surrogates (legal in JSON
    # escapes) cannot be encoded as UTF-8: both would otherwise surface as a 500.
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode text (it contains an unpaired surrogate)"
    return None
