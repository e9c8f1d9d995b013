"""The served OpenAPI document and the handlers' validators agree on every field's limits.

Boundary values are generated from the attribute descriptions
(``retrysafe.service.attributes``): lengths at and around each limit, every enum
member and a near miss, values of each format and malformed ones, null, a
non-string, and the either/or rule of inquiries. Each value is sent to the real
server over HTTP, as JSON and as a form, and checked against the schema the
served document names for that operation and media type (``jsonschema_rs``,
formats asserted). The handler accepts a value (any answer but 400/422) exactly
when the schema does; the one rule no schema states, a birthdate in the future,
is checked to be refused with its own message.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema_rs
from tests.conftest import LiveServer

from retrysafe.service import attributes
from retrysafe.service.validation import (
    EMAIL,
    PAST_DATE,
    WHITESPACE,
    Field,
    RequestAttributes,
)

Document = dict[str, Any]
MISSING = object()
"""The attribute is not sent at all."""

_rng = random.Random(20261201)


def letters(length: int) -> str:
    # Random, so that two boundary values of one length never collide on reference_id.
    return "".join(_rng.choice(string.ascii_lowercase) for _ in range(length))


def email_of_length(length: int) -> str:
    """A valid address of exactly ``length`` characters: 64-character local part, short labels."""
    local = letters(max(1, min(64, length - 6)))
    remaining = length - len(local) - len("@") - len(".com")
    labels = []
    while remaining > 63:
        labels.append(letters(62))
        remaining -= 63  # the label and its dot
    labels.append(letters(remaining))
    address = f"{local}@{'.'.join(labels)}.com"
    assert len(address) == length
    return address


def tomorrow() -> str:
    return (datetime.now(UTC).date() + timedelta(days=1)).isoformat()


@dataclass(frozen=True)
class Case:
    value: object
    unstated: str | None = None
    """The message of a rule the schema cannot state, when this value breaks only that."""


def boundary_values(field: Field) -> Iterator[Case]:
    """Values at and around every limit ``field`` declares."""
    yield Case(None)
    yield Case(5)
    yield Case(["x"])
    if field.enum:
        for member in field.enum:
            yield Case(member)
            yield Case(member + "x")
            yield Case(member.upper())
        yield Case("")
        return
    lengths = {0, field.min_length, field.max_length, field.max_length + 1}
    if field.min_length:
        lengths |= {field.min_length - 1, field.min_length + 1}
    text_format = field.format
    if text_format is None:
        for length in sorted(lengths):
            yield Case(letters(length))
        yield Case(" padded ")
        return
    for length in sorted(lengths):
        yield Case(letters(length))  # the wrong shape at every length
    if text_format is EMAIL:
        for length in (7, 64, field.max_length, field.max_length + 1):
            yield Case(email_of_length(length))
        for bad in (
            "ada@example",
            "ada example@x.org",
            "@example.org",
            "ada@@example.org",
            "ada@example.org\u2028",
            "ada@exa\u00a0mple.org",
            "a" * 65 + "@example.org",
            "ada@.org",
            "ada@example..org",
            "ada\u001c@example.org",
        ):
            yield Case(bad)
        yield Case("ada\ufeff@example.org")  # whitespace in ECMA's \s, not in Python's
        return
    assert text_format is PAST_DATE, f"no boundary values for {text_format}: add them here"
    for good in (
        "1990-12-10",
        "2000-02-29",
        "0001-01-01",
        "2001-06-30",
    ):
        yield Case(good)
    for bad in (
        "1990-12-1",
        "1990-12-100",
        "1990/12/10",
        "2001-02-29",
        "1990-13-01",
        "1990-00-10",
        "1990-12-32",
        "19901210",
        "\u0661\u0669\u0669\u0660-12-10",
        " 1990-12-10",
        "1990-12-10T00:00:00Z",
    ):
        yield Case(bad)
    yield Case(tomorrow(), unstated="must not be in the future")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    """The path template as the document has it."""
    url: str
    """The path sent, relative to /api/v1."""
    request: RequestAttributes
    media_types: tuple[str, ...] = ("application/json", "multipart/form-data")


def operations(account_id: str, inquiry_id: str) -> list[Operation]:
    missing_inquiry = "inq_01m8000000000000000000000"
    return [
        Operation("post", "/api/v1/accounts", "/accounts", attributes.ACCOUNT_INPUT),
        Operation(
            "patch",
            "/api/v1/accounts/{account_id}",
            f"/accounts/{account_id}",
            attributes.ACCOUNT_INPUT,
        ),
        Operation("post", "/api/v1/inquiries", "/inquiries", attributes.INQUIRY_INPUT),
        # An unknown inquiry: a valid body gets 404, which comes after validation.
        Operation(
            "post",
            "/api/v1/inquiries/{inquiry_id}/verifications",
            f"/inquiries/{missing_inquiry}/verifications",
            attributes.VERIFICATION_INPUT,
        ),
        Operation(
            "post",
            "/api/v1/inquiries/{inquiry_id}/documents",
            f"/inquiries/{inquiry_id}/documents",
            RequestAttributes({"kind": attributes.DOCUMENT_KIND}),
            media_types=("multipart/form-data",),
        ),
    ]


def request_schema(document: Document, operation: Operation, media_type: str) -> Document:
    content = document["paths"][operation.path][operation.method]["requestBody"]["content"]
    return {**content[media_type]["schema"], "components": document["components"]}


def form_name(operation: Operation, name: str) -> str:
    return name if operation.path.endswith("/documents") else f"data[attributes][{name}]"


def body_for(
    operation: Operation, media_type: str, values: dict[str, object]
) -> tuple[object, dict[str, Any]] | None:
    """(schema instance, httpx arguments) for ``values``, or None when a form cannot say it."""
    sent = {name: value for name, value in values.items() if value is not MISSING}
    if media_type == "application/json":
        body = {"data": {"attributes": sent}}
        return body, {"json": body}
    if any(not isinstance(value, str | None) for value in sent.values()):
        return None  # a form field is text; its type errors are JSON's to test
    fields = {form_name(operation, n): v for n, v in sent.items() if v is not None}
    files: list[tuple[str, tuple[str | None, bytes, str | None]]] = [
        (name, (None, value.encode(), None)) for name, value in fields.items()
    ]
    if operation.path.endswith("/documents"):
        files.append(("file", ("scan.png", b"\x89PNG", "image/png")))
        return {**fields, "file": "\x89PNG"}, {"files": files}
    if not files:
        # httpx sends an empty form as no body at all; one unknown-free field keeps it a form.
        return None
    return fields, {"files": files}


def requests_for(operation: Operation) -> Iterator[tuple[str, dict[str, object], Case]]:
    either = operation.request.either
    for name, field in operation.request.fields.items():
        for case in boundary_values(field):
            values: dict[str, object] = {name: case.value}
            if either is not None and name in either:
                other = either[1] if name == either[0] else either[0]
                values[other] = MISSING
            elif either is not None:
                values[either[0]] = letters(8)
            yield name, values, case
    if either is not None:
        first, second = either
        yield "either", {first: letters(8), second: "act_x"}, Case("both")
        yield "either", {first: None, second: None}, Case("neither")
        yield "either", {}, Case("neither")


def test_document_and_validators_agree_on_every_limit(
    server: LiveServer, http: httpx.Client
) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    account_id = http.post("/accounts", json={"data": {"attributes": {}}}).json()["data"]["id"]
    inquiry = http.post("/inquiries", json={"data": {"attributes": {"account_id": account_id}}})
    inquiry_id = inquiry.json()["data"]["id"]
    disagreements: list[str] = []
    checked = 0
    for operation in operations(account_id, inquiry_id):
        for media_type in operation.media_types:
            schema = request_schema(document, operation, media_type)
            validator = jsonschema_rs.validator_for(schema, validate_formats=True)
            documented = set(schema_properties(document, schema))
            described = {
                form_name(operation, n) if media_type != "application/json" else n
                for n in operation.request.fields
            }
            assert documented == described, f"{operation.method} {operation.path} {media_type}"
            for name, values, case in requests_for(operation):
                built = body_for(operation, media_type, values)
                if built is None:
                    continue
                instance, arguments = built
                response = http.request(operation.method.upper(), operation.url, **arguments)
                assert response.status_code < 500, response.text
                accepted = response.status_code not in (400, 422)
                valid = validator.is_valid(instance)
                checked += 1
                label = (
                    f"{operation.method} {operation.path} {media_type} {name}={case.value!r:.40}"
                )
                if case.unstated is not None:
                    assert valid, f"{label}: the schema should not be able to refuse this"
                    assert response.status_code == 422, label
                    assert case.unstated in response.text, label
                elif accepted != valid:
                    verdict = "valid" if valid else "invalid"
                    disagreements.append(
                        f"{label}: server {response.status_code}, schema {verdict}"
                    )
    assert not disagreements, "\n".join(disagreements)
    assert checked > 150


def schema_properties(document: Document, schema: Document) -> dict[str, Any]:
    """The properties a request schema allows: those of its attributes object, or of the form."""
    target = schema
    if "$ref" in target:
        target = document["components"]["schemas"][target["$ref"].rpartition("/")[2]]
    if "data" in target.get("properties", {}):
        target = target["properties"]["data"]["properties"]["attributes"]
    properties = dict(target["properties"])
    properties.pop("file", None)  # the upload itself, not an attribute
    return properties


def test_the_whitespace_the_email_pattern_spells_out_is_pythons() -> None:
    """The explicit class equals Python's ``\\s``, so the document's regex is the server's."""
    spelt_out, python = re.compile(f"[{WHITESPACE}]"), re.compile(r"\s")
    differing = [
        hex(code)
        for code in range(0x110000)
        if (spelt_out.match(chr(code)) is None) != (python.match(chr(code)) is None)
    ]
    assert differing == []
