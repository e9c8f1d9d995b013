"""The OpenAPI document says exactly what the service accepts, so a fuzzer can hold it to it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from retrysafe.database import Database
from retrysafe.idempotency.keys import InvalidIdempotencyKey, parse_idempotency_key
from retrysafe.service.app import create_api
from retrysafe.service.openapi import IDEMPOTENCY_KEY_PATTERN
from retrysafe.settings import Settings

Document = dict[str, Any]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Document:
    directory: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(database_url=f"sqlite:///{directory / 'db'}", document_dir=directory)
    # Building the document touches no database: no migration, no connection.
    return create_api(Database(settings.database_url), settings).openapi()


def operations(document: Document) -> Iterator[tuple[str, str, Document]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def valid(document: Document, component: str, instance: object) -> bool:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return bool(jsonschema_rs.validator_for(schema).is_valid(instance))


def accepted(value: str) -> bool:
    try:
        parse_idempotency_key(value.encode("latin-1"))
    except InvalidIdempotencyKey:
        return False
    return True


KEY_ALPHABET = st.sampled_from(['"', "\\", "a", "!", "~", " ", "\t", "\x7f", "é"])


@given(
    st.one_of(
        st.text(KEY_ALPHABET, max_size=8),
        st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=6),
    )
)
@example('"' + "a" * 255 + '"')
@example('"' + "a" * 256 + '"')
@example("a" * 255)
@example("a" * 256)
@example('"' + "a" * 254)
@example('""')
@example('"\\x"')
def test_idempotency_key_pattern_is_exactly_what_the_server_accepts(value: str) -> None:
    """A header value matches the documented pattern if and only if the server takes it."""
    if value != value.strip(" \t"):
        return  # HTTP strips surrounding whitespace before any application sees the value
    assert (re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value) is not None) == accepted(value)


def test_every_post_and_patch_documents_the_idempotency_key(document: Document) -> None:
    writes = [(m, p, o) for m, p, o in operations(document) if m in ("POST", "PATCH")]
    assert writes
    for method, path, operation in writes:
        names = [parameter["name"] for parameter in operation.get("parameters", [])]
        assert "Idempotency-Key" in names, f"{method} {path}"


def test_api_key_is_required_everywhere_but_health(document: Document) -> None:
    """The bearer scheme is global; /health opts out and never answers 401 or 429."""
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]
    for method, path, operation in operations(document):
        if path == "/health":
            assert operation["security"] == []
            assert not {"401", "429"} & set(operation["responses"])
        else:
            assert "security" not in operation, f"{method} {path} overrides security"
            assert "401" in operation["responses"], f"{method} {path}"


def test_every_create_links_to_the_operations_on_what_it_created(document: Document) -> None:
    """Each 201 links (by the new id) to every operation under its collection's /{id}."""
    ids = {op["operationId"]: (m, p) for m, p, op in operations(document)}
    creates = [(m, p, o) for m, p, o in operations(document) if "201" in o["responses"]]
    assert len(creates) >= 4
    for method, path, operation in creates:
        links = operation["responses"]["201"].get("links", {})
        assert links, f"{method} {path} has no links"
        for link in links.values():
            _, target_path = ids[link["operationId"]]
            (parameter,) = link["parameters"]
            assert f"{{{parameter}}}" in target_path
            assert link["parameters"][parameter] == "$response.body#/data/id"


def test_list_cursors_are_ids_of_the_listed_type(document: Document) -> None:
    patterns = {
        path: parameter["schema"]["pattern"]
        for method, path, operation in operations(document)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "page[after]"
    }
    assert patterns["/api/v1/accounts"].startswith("^act_")
    assert patterns["/api/v1/inquiries"].startswith("^inq_")
    assert re.fullmatch(patterns["/api/v1/accounts"], "act_01m89vppx2d96grvsbg26qna7e")
    assert not re.fullmatch(patterns["/api/v1/accounts"], "inq_01m89vppx2d96grvsbg26qna7e")


@pytest.mark.parametrize(
    ("attributes", "ok"),
    [
        ({"reference_id": "user-1"}, True),
        ({"account_id": "act_1"}, True),
        ({"account_id": "act_1", "reference_id": None}, True),
        ({"reference_id": "user-1", "account_id": "act_1"}, False),
        ({}, False),
        ({"reference_id": None}, False),
        ({"reference_id": "user-1", "colour": "red"}, False),
    ],
)
def test_inquiry_request_takes_exactly_one_target(
    document: Document, attributes: dict[str, object], ok: bool
) -> None:
    """The schema refuses what the handler refuses with 400: both, neither, or an unknown name."""
    assert valid(document, "InquiryRequest", {"data": {"attributes": attributes}}) is ok
    form = {f"data[attributes][{k}]": v for k, v in attributes.items() if v is not None}
    if None not in attributes.values():
        assert valid(document, "InquiryForm", form) is ok


def test_unknown_attributes_are_invalid_in_every_request_schema(document: Document) -> None:
    for name, schema in document["components"]["schemas"].items():
        if name.endswith("Request"):
            body = {"data": {"attributes": {"no_such_attribute": "x"}}}
            assert not valid(document, name, body), name
        elif name.endswith(("Form", "Upload")):
            assert schema.get("additionalProperties") is False, name
