"""Request fingerprints: what makes two requests with one key "the same request".

The fingerprint covers method, the concrete path, the query and the request's
*parameters*, not its bytes, under one rule: two requests a handler would treat
differently never share a fingerprint, while a retry that re-encodes the same
parameters still matches. Each body falls in exactly one of these domains, and
domains never share a digest:

- ``params``: a JSON body as canonical JSON, and a multipart form that is
  exactly a JSON:API attribute set (only text fields named
  ``data[attributes][NAME]``, each NAME once, UTF-8, nothing else in their
  part headers) as the JSON it stands for, ``{"data": {"attributes": {NAME:
  value}}}``. So a multipart field matches a JSON string of the same value.
- ``form``: any other multipart form, as the ordered list of its parts, each
  part's headers exactly as sent (name, filename, Content-Type, …) and the
  SHA-256 of its content. The boundary, preamble and epilogue are not part of it.
- ``json-unparsed``, ``form-unparsed``: a JSON body that does not parse, a
  form that does not parse or ends before its closing boundary: the bytes
  (with the boundary, which decides how a form parses).
- ``raw``: any other body: its Content-Type and its bytes.

Bodies are fed in chunks and hashed as they pass, so memory per request is a
constant for any form (see :data:`JSON_FORM_BUDGET`, what a default JSON body
may cost); only a JSON body, bounded by ``--max-body``, is kept to be parsed
once at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

JSON_FORM_BUDGET = 1024 * 1024
"""Bytes of field names and values a form may carry and still compare as its JSON.

As much as a JSON body may carry by default (``--max-body``), so an attribute set
costs the fingerprint what its JSON would, and a create the client sends as a
form because its JSON is large still matches that JSON. A form beyond it is
compared as a ``form`` instead, which hashes each part as it streams: the
fingerprint never buffers more than this per request however large the form.
"""

JSON_FORM_MAX_FIELD = 64 * 1024
"""The longest field value that still compares as a JSON string.

The reference service refuses a longer form field (400) but takes a JSON string
of any length to validation (422), so the two must not match; this is the same
bound as its ``MultipartReader(max_field_size=...)`` (a test holds them equal).
A longer field is hashed as it streams and never buffered.
"""

JSON_FORM_MAX_FIELDS = 64
"""Fields a form may have and still compare as its JSON: the service refuses a
form with more parts (400), not a JSON body with more attributes."""

_FORM_ATTRIBUTE = re.compile(rb"data\[attributes\]\[([^\[\]]*)\]")
_CONTENT_DISPOSITION = b"content-disposition"


class ParamsDigest(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def digest(self) -> str: ...


def params_digest_for(content_type: bytes | None) -> ParamsDigest:
    """Pick how a body is compared from its media type."""
    media, options = parse_options_header(content_type or b"")
    if media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    ):
        return JsonDigest()
    boundary = options.get(b"boundary")
    if media == b"multipart/form-data" and boundary:
        return MultipartDigest(boundary)
    return RawDigest(content_type or b"")


def request_fingerprint(method: str, path: str, query: bytes, params: ParamsDigest) -> str:
    material = "\n".join((method, path, query.decode("latin-1"), params.digest()))
    return hashlib.sha256(material.encode()).hexdigest()


def canonical_json(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # JSON may spell a lone surrogate ("\ud800"); it is no UTF-8 text, but it still has
    # one deterministic encoding, which no valid string shares. The handler, not the
    # fingerprint, decides what such a body deserves (422), key or no key.
    return text.encode("utf-8", "surrogatepass")


def _framed(*items: bytes | bytearray) -> bytes:
    """Items with their lengths in front, so that no two different lists hash alike."""
    return b"".join(len(item).to_bytes(8, "big") + item for item in items)


class RawDigest:
    """Anything that is not JSON or multipart is compared by Content-Type and bytes."""

    def __init__(self, content_type: bytes = b"", *, domain: str = "raw") -> None:
        self._domain = domain
        self._hash = hashlib.sha256(_framed(content_type))

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def digest(self) -> str:
        return f"{self._domain}:{self._hash.hexdigest()}"


class JsonDigest:
    """Canonical JSON; a body that does not parse is compared as its bytes."""

    def __init__(self) -> None:
        # Bodies here are bounded by --max-body (1 MiB by default), so keeping
        # them to parse once at the end is cheaper than an incremental parser.
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def digest(self) -> str:
        body = b"".join(self._chunks)
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            return "json-unparsed:" + hashlib.sha256(body).hexdigest()
        return "params:" + hashlib.sha256(canonical_json(value)).hexdigest()


class MultipartDigest:
    """A form as its JSON attribute set when it is one, else as its parts, while it streams.

    Two digests are kept as the parts pass: the ``form`` digest (each part's
    headers and content hash, folded into one running hash) always, and the
    attribute set only while every part so far qualifies and the budget holds.
    """

    def __init__(self, boundary: bytes) -> None:
        self._unparsed = RawDigest(boundary, domain="form-unparsed")
        self._failed = False
        self._parts = hashlib.sha256()
        self._attributes: dict[str, str] | None = {}
        """The form as JSON attributes so far; ``None`` once it cannot be one."""
        self._budget = JSON_FORM_BUDGET
        self._header_count = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._attribute: bytes | None = None
        """This part's attribute NAME, while it can still be one."""
        self._value = bytearray()
        self._content = hashlib.sha256()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        self._unparsed.feed(chunk)
        if self._failed:
            return
        try:
            self._parser.write(chunk)
        except FormParserError:
            # A body we cannot parse still has a deterministic identity: its bytes.
            self._failed = True

    def digest(self) -> str:
        if self._failed or self._parser.state != MultipartState.END:
            # A truncated form is an error to the handler, not the parts it got so far.
            return self._unparsed.digest()
        if self._attributes is not None:
            document = {"data": {"attributes": self._attributes}}
            return "params:" + hashlib.sha256(canonical_json(document)).hexdigest()
        return "form:" + self._parts.hexdigest()

    # The ``form`` digest is a tagged sequence, so no two different forms hash alike:
    # per part, b"H" + the framed name and value of each header as sent, then b"C" +
    # the SHA-256 of its content.

    def _on_part_begin(self) -> None:
        self._header_count = 0
        self._attribute = None
        self._value.clear()
        self._content = hashlib.sha256()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        field, value = self._header_field, self._header_value
        self._parts.update(b"H" + _framed(field, value))
        self._header_count += 1
        if self._attributes is not None:
            # Headers come before any data, so the part is judged before it is kept.
            name = self._attribute_name(field, value) if self._header_count == 1 else None
            if name is None or len(self._attributes) >= JSON_FORM_MAX_FIELDS:
                self._no_attribute_set()
            else:
                self._attribute = name
                self._spend(len(name))
        field.clear()
        value.clear()

    @staticmethod
    def _attribute_name(field: bytearray, value: bytearray) -> bytes | None:
        """NAME when this header makes its part the text field ``data[attributes][NAME]``.

        Anything more (a filename, another parameter, a Content-Type or any other
        header, which clears the NAME) may mean something to a handler that the
        JSON string could not say.
        """
        if field.lower() != _CONTENT_DISPOSITION:
            return None
        disposition, options = parse_options_header(bytes(value))
        if disposition != b"form-data" or options.keys() != {b"name"}:
            return None
        match = _FORM_ATTRIBUTE.fullmatch(options[b"name"])
        if match is None:
            return None
        return match.group(1)

    def _spend(self, size: int) -> None:
        self._budget -= size
        if self._budget < 0:
            self._no_attribute_set()

    def _no_attribute_set(self) -> None:
        """This form is compared as its parts from now on: drop what was kept for its JSON."""
        self._attributes = None
        self._attribute = None
        self._value = bytearray()  # give the buffer back, not just empty it

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        self._content.update(piece)
        if self._attribute is None:
            return
        if len(self._value) + len(piece) > JSON_FORM_MAX_FIELD:
            self._no_attribute_set()
            return
        self._spend(len(piece))
        if self._attribute is not None:
            self._value += piece

    def _on_part_end(self) -> None:
        self._parts.update(b"C" + self._content.digest())
        if self._attributes is None:
            return
        if self._attribute is None:  # a part without any header
            self._no_attribute_set()
            return
        try:
            name, value = self._attribute.decode(), self._value.decode()
        except UnicodeDecodeError:
            # The handler refuses such a field; replacing the bytes would collide
            # with a field that really holds U+FFFD.
            self._no_attribute_set()
            return
        if name in self._attributes:
            # A repeated field is a list to some handlers, the last value to others.
            self._no_attribute_set()
            return
        self._attributes[name] = value
        self._value.clear()
