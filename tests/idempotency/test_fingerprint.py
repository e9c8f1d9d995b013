"""Fingerprints compare parameters, not bytes, and see every part of the request."""

from __future__ import annotations

import json

from hypothesis import assume, given
from hypothesis import strategies as st

from retrysafe.idempotency.fingerprint import params_digest_for, request_fingerprint

BOUNDARY = "rsboundary"


def multipart(fields: dict[str, str], files: dict[str, bytes] | None = None) -> bytes:
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, content in (files or {}).items():
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            'filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def fingerprint(
    body: bytes,
    content_type: bytes,
    *,
    method: str = "POST",
    path: str = "/api/v1/accounts",
    query: bytes = b"",
    chunk: int = 5,
) -> str:
    digest = params_digest_for(content_type)
    for start in range(0, len(body), chunk):
        digest.feed(body[start : start + chunk])
    return request_fingerprint(method, path, query, digest)


JSON = b"application/json"
FORM = f"multipart/form-data; boundary={BOUNDARY}".encode()


def test_json_key_order_and_whitespace_do_not_matter() -> None:
    a = b'{"data": {"attributes": {"name_first": "Ada", "name_last": "L"}}}'
    b = b'{"data":{"attributes":{"name_last":"L","name_first":"Ada"}}}'
    assert fingerprint(a, JSON) == fingerprint(b, JSON)


def test_json_values_matter() -> None:
    a = b'{"data": {"attributes": {"name_first": "Ada"}}}'
    b = b'{"data": {"attributes": {"name_first": "Bob"}}}'
    assert fingerprint(a, JSON) != fingerprint(b, JSON)


def test_method_path_and_query_matter() -> None:
    body = b'{"data": {"attributes": {}}}'
    base = fingerprint(body, JSON)
    assert fingerprint(body, JSON, method="PATCH") != base
    assert fingerprint(body, JSON, path="/api/v1/accounts/act_2") != base
    assert fingerprint(body, JSON, query=b"x=1") != base


def test_multipart_field_matches_json_string_of_the_same_value() -> None:
    form = multipart({"data[attributes][name_first]": "Ada", "data[attributes][kind]": "x"})
    as_json = json.dumps({"data": {"attributes": {"kind": "x", "name_first": "Ada"}}}).encode()
    assert fingerprint(form, FORM) == fingerprint(as_json, JSON)


def test_multipart_files_compare_by_content() -> None:
    one = multipart({"kind": "passport"}, {"file": b"\x00\x01image-bytes"})
    same = multipart({"kind": "passport"}, {"file": b"\x00\x01image-bytes"})
    other = multipart({"kind": "passport"}, {"file": b"\x00\x01image-byteZ"})
    assert fingerprint(one, FORM) == fingerprint(same, FORM, chunk=1)
    assert fingerprint(one, FORM) != fingerprint(other, FORM)


def test_unparseable_bodies_compare_as_bytes() -> None:
    assert fingerprint(b"{not json", JSON) == fingerprint(b"{not json", JSON)
    assert fingerprint(b"{not json", JSON) != fingerprint(b"{not json!", JSON)
    assert fingerprint(b"abc", b"text/plain") != fingerprint(b"abd", b"text/plain")


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=8),
        st.text(max_size=20),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_chunking_never_changes_the_fingerprint(fields: dict[str, str], chunk: int) -> None:
    # Names and values a form encoder would have escaped are outside this property.
    attributes = {
        "".join(c for c in k if c not in '[]"\\'): v.replace("\r", "").replace("\n", "")
        for k, v in fields.items()
    }
    attributes.pop("", None)
    assume(attributes)
    form = multipart({f"data[attributes][{k}]": v for k, v in attributes.items()})
    whole = fingerprint(form, FORM, chunk=len(form) + 1)
    assert fingerprint(form, FORM, chunk=chunk) == whole
    assert whole == fingerprint(json.dumps({"data": {"attributes": attributes}}).encode(), JSON)


def test_a_lone_surrogate_has_a_fingerprint_of_its_own() -> None:
    """Valid JSON, invalid text: it fingerprints (no exception) and shares it with nothing."""
    lone = fingerprint(b'{"name": "\\ud800"}', JSON)
    assert lone == fingerprint(b'{ "name" : "\\ud800" }', JSON)
    assert lone != fingerprint(b'{"name": "\\ud801"}', JSON)
    assert lone != fingerprint('{"name": "\ufffd"}'.encode(), JSON)
    assert lone != fingerprint(b'{"name": "\\\\ud800"}', JSON)
