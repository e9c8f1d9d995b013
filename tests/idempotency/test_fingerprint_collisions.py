"""Two requests the handler would treat differently never share a fingerprint.

Each example below was a collision (one request replayed the other's answer)
or a gap (a difference the fingerprint did not see). The property tests then
check the rule against the reference service's own body readers: whenever two
bodies fingerprint alike, the accounts reader (attributes and field errors, or
the error it raises) and the documents reader (fields, and each streamed file
part's name, filename, Content-Type and bytes) see the same thing in both.
The one difference the contract keeps on purpose: a form that is exactly a
JSON:API attribute set fingerprints like the JSON body it stands for (SPEC §3).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tracemalloc
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from retrysafe.envelope import ApiError
from retrysafe.idempotency.fingerprint import (
    JSON_FORM_BUDGET,
    JSON_FORM_MAX_FIELD,
    JSON_FORM_MAX_FIELDS,
    params_digest_for,
    request_fingerprint,
)
from retrysafe.service.bodies import MAX_MULTIPART_PARTS, BodyReader, FilePart, MultipartReader

JSON = b"application/json"


@dataclass(frozen=True)
class Part:
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes


def field(name: str, value: str | bytes, *, content_type: str | None = None) -> Part:
    headers = [(b"Content-Disposition", f'form-data; name="{name}"'.encode())]
    if content_type is not None:
        headers.append((b"Content-Type", content_type.encode()))
    return Part(tuple(headers), value.encode() if isinstance(value, str) else value)


def upload(name: str, content: bytes, filename: str, content_type: str | None = None) -> Part:
    disposition = f'form-data; name="{name}"; filename="{filename}"'.encode()
    headers = [(b"Content-Disposition", disposition)]
    if content_type is not None:
        headers.append((b"Content-Type", content_type.encode()))
    return Part(tuple(headers), content)


def encode(parts: list[Part], *, boundary: str = "b0undary", closed: bool = True) -> bytes:
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\n".encode())
        chunks.extend(name + b": " + value + b"\r\n" for name, value in part.headers)
        chunks.append(b"\r\n" + part.content + b"\r\n")
    if closed:
        chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def form_type(boundary: str = "b0undary") -> bytes:
    return f"multipart/form-data; boundary={boundary}".encode()


def fingerprint(body: bytes, content_type: bytes, *, chunk: int = 7) -> str:
    digest = params_digest_for(content_type)
    for start in range(0, len(body), chunk):
        digest.feed(body[start : start + chunk])
    return request_fingerprint("POST", "/api/v1/accounts", b"", digest)


def of_form(parts: list[Part], *, boundary: str = "b0undary", closed: bool = True) -> str:
    return fingerprint(encode(parts, boundary=boundary, closed=closed), form_type(boundary))


def of_json(document: object) -> str:
    return fingerprint(json.dumps(document).encode(), JSON)


def attributes(**values: str) -> dict[str, object]:
    return {"data": {"attributes": values}}


# -- the gaps and collisions, one by one -------------------------------------------------------


def test_an_uploads_filename_is_part_of_it() -> None:
    passport = upload("file", b"\x89PNG...", "passport.png", "image/png")
    renamed = upload("file", b"\x89PNG...", "selfie.png", "image/png")
    assert of_form([passport]) != of_form([renamed])


def test_an_uploads_content_type_is_part_of_it() -> None:
    as_png = upload("file", b"\x89PNG...", "passport.png", "image/png")
    as_jpeg = upload("file", b"\x89PNG...", "passport.png", "image/jpeg")
    untyped = upload("file", b"\x89PNG...", "passport.png")
    assert len({of_form([as_png]), of_form([as_jpeg]), of_form([untyped])}) == 3


def test_trailing_junk_in_a_name_is_not_the_attribute() -> None:
    """``…[name_first]junk`` is an unknown parameter (400) to the handler, not name_first."""
    junk = of_form([field("data[attributes][name_first]junk", "Ada")])
    assert junk != of_form([field("data[attributes][name_first]", "Ada")])
    assert junk != of_json(attributes(name_first="Ada"))
    assert of_form([field("data[attributes][name_first][x]", "Ada")]) != junk


def test_a_scalar_then_a_nested_field_is_not_the_nested_field_alone() -> None:
    both = [field("data[attributes]", "x"), field("data[attributes][name_first]", "Ada")]
    alone = [field("data[attributes][name_first]", "Ada")]
    assert of_form(both) != of_form(alone)
    assert of_form(both) != of_json(attributes(name_first="Ada"))


def test_an_empty_form_is_the_empty_attribute_set_not_an_empty_object() -> None:
    """The handler creates an account from an empty form and from ``{"data": {"attributes":
    {}}}``, and answers ``{}`` with 400: the empty form must match only the former."""
    assert of_form([]) == of_json(attributes())
    assert of_form([]) != of_json({})


def test_fields_outside_data_attributes_are_not_json_members() -> None:
    assert of_form([field("foo", "bar")]) != of_json({"foo": "bar"})
    assert of_form([field("data[attributes]", "x")]) != of_json({"data": {"attributes": "x"}})


def test_a_repeated_field_is_neither_a_list_nor_its_last_value() -> None:
    name = "data[attributes][name_first]"
    twice = of_form([field(name, "A"), field(name, "B")])
    assert twice != of_json({"data": {"attributes": {"name_first": ["A", "B"]}}})
    assert twice != of_json(attributes(name_first="B"))
    assert twice != of_form([field(name, "B")])


def test_a_field_that_is_not_utf8_is_not_its_replacement_characters() -> None:
    """The handler refuses ``\\xff`` (400) and accepts U+FFFD: they must differ."""
    invalid = of_form([field("data[attributes][name_first]", b"Ad\xff")])
    assert invalid != of_form([field("data[attributes][name_first]", "Ad\ufffd")])
    assert invalid != of_json(attributes(name_first="Ad\ufffd"))


def test_a_field_with_its_own_content_type_is_not_a_plain_attribute() -> None:
    typed = of_form([field("data[attributes][name_first]", "Ada", content_type="text/plain")])
    assert typed != of_form([field("data[attributes][name_first]", "Ada")])


def test_a_truncated_form_is_not_the_complete_one() -> None:
    """The handler answers a form without its closing boundary 400, not with its parts."""
    parts = [field("data[attributes][name_first]", "Ada")]
    assert of_form(parts, closed=False) != of_form(parts)
    # The parts that did end are the whole complete form: the cut-off one still counts.
    cut_off = [*parts, field("data[attributes][name_last]", "Lovelace")]
    assert of_form(cut_off, closed=False) != of_form(parts)
    files = [upload("file", b"data", "a.bin")]
    assert of_form([*files, upload("file", b"more", "b.bin")], closed=False) != of_form(files)


def test_a_file_is_not_a_field_holding_its_hash() -> None:
    content = b"image-bytes"
    as_hash = "sha256:" + hashlib.sha256(content).hexdigest()
    assert of_form([upload("file", content, "a.bin")]) != of_form([field("file", as_hash)])


def test_unparsable_json_and_raw_bodies_keep_their_content_type() -> None:
    """Invalid JSON is 400 to the handler, the same bytes as text/plain are 415."""
    assert fingerprint(b"{not json", JSON) != fingerprint(b"{not json", b"text/plain")
    assert fingerprint(b"a,b", b"text/csv") != fingerprint(b"a,b", b"text/plain")
    assert fingerprint(b"a,b", b"text/csv") == fingerprint(b"a,b", b"text/csv", chunk=1)


# -- what still matches ----------------------------------------------------------------------


def test_the_boundary_is_not_part_of_a_form() -> None:
    """A retry that re-encodes the same parts (a new random boundary) matches."""
    parts = [field("kind", "passport"), upload("file", b"\x00\x01", "p.png", "image/png")]
    assert of_form(parts, boundary="first") == of_form(parts, boundary="second")
    fields = [field("data[attributes][name_first]", "Ada")]
    assert of_form(fields, boundary="first") == of_form(fields, boundary="second")


def test_an_attribute_set_ignores_order_and_other_forms_do_not() -> None:
    first, last = field("data[attributes][name_first]", "Ada"), field("data[attributes][x]", "L")
    assert of_form([first, last]) == of_form([last, first])
    kind, file = field("kind", "passport"), upload("file", b"\x00", "p.png")
    assert of_form([kind, file]) != of_form([file, kind])


def test_the_attribute_set_limits_are_the_handlers_form_limits() -> None:
    """Past them the handler refuses the form (400) but would validate the JSON (422)."""
    assert MultipartReader()._max_field_size == JSON_FORM_MAX_FIELD
    assert MAX_MULTIPART_PARTS == JSON_FORM_MAX_FIELDS


def test_a_field_longer_than_the_handler_takes_is_not_a_json_string() -> None:
    longest = "x" * JSON_FORM_MAX_FIELD
    assert of_form([field("data[attributes][name_first]", longest)]) == of_json(
        attributes(name_first=longest)
    )
    too_long = longest + "x"
    assert of_form([field("data[attributes][name_first]", too_long)]) != of_json(
        attributes(name_first=too_long)
    )


def test_a_form_with_more_fields_than_the_handler_takes_is_not_its_json() -> None:
    values = {f"a{index}": "x" for index in range(JSON_FORM_MAX_FIELDS + 1)}
    parts = [field(f"data[attributes][{name}]", value) for name, value in values.items()]
    assert of_form(parts[:-1]) == of_json(attributes(**dict(list(values.items())[:-1])))
    assert of_form(parts) != of_json(attributes(**values))


def test_a_large_create_sent_as_a_form_still_matches_its_json() -> None:
    """The client sends a create as a form past 64 KiB of JSON: its JSON must still match."""
    values = {f"a{index}": "y" * 60_000 for index in range(4)}
    parts = [field(f"data[attributes][{name}]", value) for name, value in values.items()]
    assert of_form(parts) == of_json(attributes(**values))


# -- memory: a long field is hashed as it passes, never kept ---------------------------------


def _peak_while_feeding(body: bytes) -> int:
    """Bytes the digest allocates at its peak while ``body`` is fed in 64 KiB chunks.

    tracemalloc counts every thread of the process: an xdist worker's channel thread
    receiving its next tests, or a thread a test before left finishing (a server
    shutting down, a database being dropped), may allocate in the same moment. Such
    noise only ever adds, and the digest allocates the same on every run, so the
    least of three runs is the digest's own peak.
    """
    chunks = [body[start : start + 65536] for start in range(0, len(body), 65536)]
    peaks = []
    for _ in range(3):
        tracemalloc.start()
        try:
            digest = params_digest_for(form_type())
            baseline = tracemalloc.get_traced_memory()[0]
            for chunk in chunks:
                digest.feed(chunk)
            digest.digest()
            peaks.append(tracemalloc.get_traced_memory()[1] - baseline)
        finally:
            tracemalloc.stop()
    return min(peaks)


SLACK = 4 * 65536
"""A chunk being sliced, python-multipart's own state, the hash objects."""


def test_a_long_field_costs_the_fingerprint_at_most_one_field() -> None:
    """8 MiB in one text field: kept only up to the 64 KiB a JSON string may match."""
    peak = _peak_while_feeding(encode([field("data[attributes][name_first]", b"x" * 8 * 2**20)]))
    assert peak < JSON_FORM_MAX_FIELD + SLACK, f"peak {peak} bytes"


def test_many_fields_cost_the_fingerprint_at_most_its_budget() -> None:
    """64 fields of 64 KiB (4 MiB) and 10 000 small ones: never more than the budget is kept."""
    full = [field(f"data[attributes][a{n}]", b"x" * JSON_FORM_MAX_FIELD) for n in range(64)]
    assert _peak_while_feeding(encode(full)) < JSON_FORM_BUDGET + SLACK
    small = [field(f"data[attributes][a{n}]", b"x") for n in range(10_000)]
    assert _peak_while_feeding(encode(small)) < SLACK


# -- the rule, against the reference service's own readers -----------------------------------


def _request(body: bytes, content_type: bytes) -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type)],
    }
    return Request(scope, receive)


def _error(exc: ApiError) -> object:
    return ("error", exc.status, exc.errors)


async def _accounts_view(body: bytes, content_type: bytes) -> object:
    """What the accounts handler validates: the attributes and field errors (or the error)."""
    try:
        values, errors = await BodyReader().attributes(_request(body, content_type))
    except ApiError as exc:
        return _error(exc)
    return (values, errors.errors)


class _Capture:
    def __init__(self, part: FilePart, into: list[object]) -> None:
        self.data = bytearray()
        into.append((part.name, part.filename, part.content_type, self.data))

    async def write(self, data: bytes) -> None:
        self.data += data


async def _documents_view(body: bytes, content_type: bytes) -> object:
    """What the upload handler sees: its fields and each part named ``file`` streamed."""
    files: list[object] = []
    reader = MultipartReader(
        open_file=lambda part: _Capture(part, files) if part.name == "file" else None
    )
    try:
        fields = await reader.read(_request(body, content_type))
    except ApiError as exc:
        return _error(exc)
    return (fields, [(n, f, t, bytes(d)) for n, f, t, d in files])  # type: ignore[misc]


def _views(body: bytes, content_type: bytes) -> tuple[object, object]:
    async def both() -> tuple[object, object]:
        return (
            await _accounts_view(body, content_type),
            await _documents_view(body, content_type),
        )

    return asyncio.run(both())


NAMES = st.sampled_from(
    [
        "data[attributes][name_first]",
        "data[attributes][name_last]",
        "data[attributes]",
        "data[attributes][name_first]junk",
        "data[attributes][name_first][x]",
        "data",
        "kind",
        "file",
    ]
)
VALUES = st.sampled_from([b"Ada", b"", b"x", "\ufffd".encode(), b"\xff", b"sha256:00"])
PARTS = st.builds(
    lambda name, value, filename, content_type: Part(
        (
            (
                b"Content-Disposition",
                f'form-data; name="{name}"'.encode()
                + (b"" if filename is None else f'; filename="{filename}"'.encode()),
            ),
            *(() if content_type is None else ((b"Content-Type", content_type.encode()),)),
        ),
        value,
    ),
    NAMES,
    VALUES,
    st.sampled_from([None, "a.txt", "b.txt"]),
    st.sampled_from([None, "text/plain", "image/png"]),
)
FORMS = st.tuples(st.lists(PARTS, max_size=4), st.booleans())


@settings(max_examples=300, deadline=None)
@given(FORMS, FORMS)
def test_forms_that_fingerprint_alike_are_read_alike(
    one: tuple[list[Part], bool], other: tuple[list[Part], bool]
) -> None:
    (parts_a, closed_a), (parts_b, closed_b) = one, other
    body_a = encode(parts_a, closed=closed_a)
    # Another boundary, so that equal fingerprints never come from equal bytes alone.
    body_b = encode(parts_b, boundary="other-b0undary", closed=closed_b)
    same = fingerprint(body_a, form_type()) == fingerprint(body_b, form_type("other-b0undary"))
    if same:
        assert _views(body_a, form_type()) == _views(body_b, form_type("other-b0undary"))
    if parts_a == parts_b and closed_a and closed_b:
        assert same, "a re-encoded form must match itself"


JSON_VALUES = st.sampled_from(["Ada", "", "x", "\ufffd", ["Ada"], {"a": "b"}, 1])
JSON_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(["name_first", "name_last", "x"]), JSON_VALUES, max_size=3).map(
        lambda values: {"data": {"attributes": values}}
    ),
    st.sampled_from([{}, {"data": {"attributes": "x"}}, {"data": "x"}, {"foo": "bar"}]),
)


@settings(max_examples=300, deadline=None)
@given(FORMS, JSON_BODIES)
def test_a_form_and_a_json_body_that_fingerprint_alike_are_read_alike(
    form: tuple[list[Part], bool], document: dict[str, object]
) -> None:
    """Compared on the accounts reader: the documents endpoint takes no JSON (the exception
    the contract keeps, see the module docstring)."""
    parts, closed = form
    body = encode(parts, closed=closed)
    as_json = json.dumps(document).encode()
    if fingerprint(body, form_type()) == fingerprint(as_json, JSON):
        form_view = asyncio.run(_accounts_view(body, form_type()))
        assert form_view == asyncio.run(_accounts_view(as_json, JSON))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name_first", "name_last", "email_address", "x"]),
        st.sampled_from(["Ada", "", "Lovelace", "é", "\ufffd"]),
        max_size=4,
    )
)
def test_an_attribute_set_form_matches_its_json_body(values: dict[str, str]) -> None:
    """The equivalence SPEC §3 promises, for every attribute set: same fingerprint, same reading."""
    parts = [field(f"data[attributes][{name}]", value) for name, value in values.items()]
    document = {"data": {"attributes": values}}
    assert of_form(parts) == of_json(document)
    body = encode(parts)
    assert asyncio.run(_accounts_view(body, form_type())) == asyncio.run(
        _accounts_view(json.dumps(document).encode(), JSON)
    )
