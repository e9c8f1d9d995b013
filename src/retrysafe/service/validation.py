"""Field validators shared by JSON and multipart bodies: all errors at once, each with a pointer.

Shape problems (wrong type, unknown or missing attribute) are 400; well-formed but
unacceptable values (too long, bad email, impossible or future date, not one of an
enumeration) are 422. A :class:`Field` is also what the OpenAPI document states
(``retrysafe.service.openapi`` renders it), so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from retrysafe.envelope import FieldErrors

ATTRIBUTES_POINTER = "/data/attributes/"

# Exactly what Python's ``\s`` matches in a str pattern, spelt out so that the same
# expression means the same in Python, in ECMA-262 (the OpenAPI document's dialect)
# and in Rust's regex (jsonschema_rs): their ``\s`` differ on \x1c-\x1f, \x85 and \ufeff.
WHITESPACE = (
    r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Deliberately simple: one "@", no whitespace, a dotted domain. Deliverability is the
# mail server's to judge; this only catches values that cannot be an address at all.
EMAIL_PATTERN = rf"[^@{WHITESPACE}]{{1,64}}@[^@{WHITESPACE}.]+(\.[^@{WHITESPACE}.]+)+"
DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_EMAIL = re.compile(EMAIL_PATTERN)
# \d, not [0-9]: a date in other digits deserves "not a real calendar date" (fromisoformat
# refuses it), which is why every accepted value still matches DATE_PATTERN.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Invalid:
    """Marks a value that already produced a field error, so it is left out of the result."""


INVALID = _Invalid()


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A shape a text value must have beyond its length, such as an email address."""

    name: str | None
    """The JSON Schema ``format`` whose meaning is exactly this check, if there is one."""
    pattern: str
    """A regular expression every accepted value matches in full (no anchors)."""
    problem: Callable[[str], str | None]
    """The server's whole check: why a value is unacceptable (422), or ``None``."""
    length: int | None = None
    """The length of every accepted value, when the format fixes it."""


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


# Not JSON Schema's "email": that one refuses addresses this check takes (a domain over
# 255 characters, for one), so it would state a limit the server does not enforce.
EMAIL = TextFormat(None, EMAIL_PATTERN, email_problem)
# "Not in the future" is the one rule here no schema can state; the field's description does.
PAST_DATE = TextFormat("date", DATE_PATTERN, past_date_problem, length=10)


@dataclass(frozen=True, slots=True)
class Field:
    """One text attribute a client may send: a string (or null, when ``nullable``)."""

    max_length: int
    nullable: bool = True
    min_length: int = 0
    enum: tuple[str, ...] = ()
    """When given, the only values accepted."""
    format: TextFormat | None = None
    default: str | None = None
    """What the server uses when the attribute is absent or null (documentation only)."""
    description: str = ""

    def problem(self, value: str) -> str | None:
        """Why ``value``, a string within the length limits, is unacceptable, or ``None``."""
        if self.enum and value not in self.enum:
            return "must be one of " + ", ".join(self.enum)
        if self.format is not None:
            return self.format.problem(value)
        return None


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What ``data.attributes`` of a create or update may hold: its fields and rules."""

    fields: Mapping[str, Field]
    either: tuple[str, str] | None = None
    """Two attributes of which exactly one must be given (a null one is not given)."""


def validate(
    attributes: Mapping[str, object],
    schema: RequestAttributes,
    errors: FieldErrors,
    *,
    pointer_prefix: str = ATTRIBUTES_POINTER,
) -> dict[str, str | None]:
    """Check every attribute against ``schema``; return the clean ones, record the rest.

    Unknown attributes are a 400 ``unknown_parameter``: silently dropping a misspelt
    ``reference-id`` would create a record the caller cannot find again.
    """
    clean: dict[str, str | None] = {}
    fields = schema.fields
    for name, value in attributes.items():
        pointer = pointer_prefix + pointer_token(name)
        label = _label(pointer_prefix, name)
        described = fields.get(name)
        if described is None:
            allowed = ", ".join(sorted(fields)) or "none"
            errors.add(
                400,
                "unknown_parameter",
                f"{label} is not a known attribute (allowed: {allowed})",
                pointer,
            )
            continue
        result = check_value(value, described, label, pointer, errors)
        if not isinstance(result, _Invalid):
            clean[name] = result
    if schema.either is not None:
        _check_either(attributes, schema.either, errors, pointer_prefix)
    return clean


def _check_either(
    attributes: Mapping[str, object],
    names: tuple[str, str],
    errors: FieldErrors,
    pointer_prefix: str,
) -> None:
    first, second = names
    given = [name for name in names if attributes.get(name) is not None]
    choice = f"{_label(pointer_prefix, first)} or {_label(pointer_prefix, second)}"
    if not given:
        errors.add(
            400, "parameter_missing", f"{choice} is required", pointer_prefix + pointer_token(first)
        )
    elif len(given) > 1:
        errors.add(
            400,
            "invalid_parameter",
            f"give {choice}, not both",
            pointer_prefix + pointer_token(second),
        )


def _label(pointer_prefix: str, name: str) -> str:
    return pointer_prefix.strip("/").replace("/", ".") + "." + name


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
    problem = _text_problem(value, field) or field.problem(value)
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
