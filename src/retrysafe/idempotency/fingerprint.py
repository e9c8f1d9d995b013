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
small constant for any form (see :data:`JSON_FORM_BUDGET`); only a JSON body,
bounded by ``--max-body``, is kept to be parsed once at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

JSON_FORM_BUDGET = 64 * 1024
"""Bytes of field names and values a form may carry and still compare as its JSON.

A form beyond it (or with more than :data:`JSON_FORM_MAX_FIELDS` fields) is
compared as a ``form`` instead, which hashes each part as it streams: the
fingerprint never buffers more than this per request however large a field
is. Attribute sets are far smaller (the reference service's longest attribute
is 320 characters); only a client that switches between JSON and multipart
for one key with such a form would see a mismatch.
"""

JSON_FORM_MAX_FIELDS = 64
"""Fields a form may have and still compare as its JSON (the same bound as above)."""

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


def _framed(*items: bytes) -> bytes:
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
        self._headers: list[tuple[bytes, bytes]] = []
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
                "on_headers_finished": self._on_headers_finished,
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

    def _on_part_begin(self) -> None:
        self._headers = []
        self._attribute = None
        self._value.clear()
        self._content = hashlib.sha256()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers.append((bytes(self._header_field), bytes(self._header_value)))
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        if self._attributes is None:
            return
        name = self._attribute_name()
        if name is None or len(self._attributes) >= JSON_FORM_MAX_FIELDS:
            self._attributes = None
            return
        self._spend(len(name))
        self._attribute = name

    def _attribute_name(self) -> bytes | None:
        """NAME when this part is nothing but the text field ``data[attributes][NAME]``.

        Anything more (a filename, a Content-Type, another header or parameter)
        may mean something to a handler that the JSON string could not say.
        """
        if len(self._headers) != 1 or self._headers[0][0].lower() != _CONTENT_DISPOSITION:
            return None
        disposition, options = parse_options_header(self._headers[0][1])
        if disposition != b"form-data" or options.keys() != {b"name"}:
            return None
        match = _FORM_ATTRIBUTE.fullmatch(options[b"name"])
        if match is None:
            return None
        return match.group(1)

    def _spend(self, size: int) -> None:
        self._budget -= size
        if self._budget < 0:
            self._attributes = None
            self._attribute = None
            self._value = bytearray()  # give the buffer back, not just empty it

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        self._content.update(piece)
        if self._attribute is not None:
            self._spend(len(piece))
            if self._attribute is not None:
                self._value += piece

    def _on_part_end(self) -> None:
        flat = [item for pair in self._headers for item in pair]
        self._parts.update(_framed(len(self._headers).to_bytes(8, "big"), *flat))
        self._parts.update(self._content.digest())
        if self._attribute is None or self._attributes is None:
            return
        try:
            name, value = self._attribute.decode(), self._value.decode()
        except UnicodeDecodeError:
            # The handler refuses such a field; replacing the bytes would collide
            # with a field that really holds U+FFFD.
            self._attributes = None
            return
        if name in self._attributes:
            # A repeated field is a list to some handlers, the last value to others.
            self._attributes = None
            return
        self._attributes[name] = value
        self._value.clear()
