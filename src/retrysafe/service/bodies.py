"""Request bodies as attribute mappings: JSON and multipart share one validator downstream.

JSON bodies are ``{"data": {"attributes": {...}}}``; form bodies carry the same
attributes as fields named ``data[attributes][NAME]``. Shape problems are 400:
``invalid_json`` (unparsable or nested deeper than ``max_json_depth``),
``parameter_missing`` / ``invalid_type`` for ``data`` and ``attributes``,
``invalid_multipart`` for a malformed or truncated form, ``unknown_parameter``
for form fields outside ``data[attributes][…]``; other content types are 415.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from retrysafe.envelope import ApiError, FieldErrors
from retrysafe.service.validation import pointer_token

_FORM_ATTRIBUTE = re.compile(r"data\[attributes\]\[([^\[\]]*)\]")
_JSON_TYPES = ("application/json", "")
_MULTIPART = "multipart/form-data"
_EXAMPLE = '{"data": {"attributes": {...}}}'

MAX_MULTIPART_PARTS = 64
"""Parts one form may have (a create has at most six fields, an upload two); more is 400."""
# A part's headers are bounded by python-multipart itself: at most 8 headers of 4224
# bytes each (DEFAULT_MAX_HEADER_COUNT / _SIZE), else FormParserError, i.e. a 400.


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def unsupported_media_type(media: str, accepted: str) -> ApiError:
    return ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {media!r} is not accepted here; send {accepted}.",
    )


class FileSink(Protocol):
    """Where the bytes of one streamed file part go, as they arrive."""

    async def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class FilePart:
    """A part the caller chose to stream instead of buffering as a field."""

    name: str
    filename: str | None
    content_type: str | None


OpenFile = Callable[[FilePart], FileSink | None]
"""Decides, once a part's headers are in, whether to stream it (a sink) or buffer it (None)."""


@dataclass(slots=True)
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    sink: FileSink | None = None


class MultipartReader:
    """Streams one ``multipart/form-data`` body without holding file parts in memory.

    Fields are buffered (each at most ``max_field_size`` bytes); parts for which
    ``open_file`` returns a sink are handed to it chunk by chunk, one await per
    received chunk, so a slow disk applies back-pressure to the client.
    """

    def __init__(
        self,
        *,
        open_file: OpenFile | None = None,
        max_field_size: int = 64 * 1024,
        max_parts: int = MAX_MULTIPART_PARTS,
    ) -> None:
        self._open_file = open_file
        self._max_field_size = max_field_size
        self._max_parts = max_parts
        self._fields: list[tuple[str, str]] = []
        self._part = _Part()
        self._parts = 0
        self._pending: list[tuple[FileSink, bytes]] = []

    async def read(self, request: Request) -> list[tuple[str, str]]:
        """Consume the body; return its non-file fields in order."""
        _, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if not boundary:
            raise _malformed("the Content-Type header has no boundary parameter")
        try:
            parser = MultipartParser(
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
            # The body-limit layer bounds the total size (413) as the chunks arrive.
            async for chunk in request.stream():
                parser.write(chunk)
                await self._flush()
            parser.finalize()
        except FormParserError as exc:
            raise _malformed(str(exc) or "it could not be parsed") from exc
        if parser.state != MultipartState.END:
            raise _malformed("the body ended before the closing boundary")
        return self._fields

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for sink, data in pending:
            await sink.write(data)

    # python-multipart calls these synchronously from parser.write(); file data is
    # queued and written by _flush() so that disk I/O can be awaited.

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise _malformed(f"it has more than {self._max_parts} parts")
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        part.headers.append((bytes(part.header_name).lower(), bytes(part.header_value)))
        part.header_name.clear()
        part.header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        headers = dict(part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in options:
            raise _malformed('a part has no Content-Disposition "name"')
        part.name = _decode(options[b"name"])
        if self._open_file is not None:
            filename = options.get(b"filename")
            content_type = headers.get(b"content-type")
            part.sink = self._open_file(
                FilePart(
                    name=part.name,
                    filename=_decode(filename) if filename is not None else None,
                    content_type=_decode(content_type) if content_type is not None else None,
                )
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.sink is not None:
            self._pending.append((part.sink, data[start:end]))
            return
        part.data += data[start:end]
        if len(part.data) > self._max_field_size:
            raise _malformed(
                f"field {part.name!r} is longer than {self._max_field_size} bytes", part.name
            )

    def _on_part_end(self) -> None:
        part = self._part
        if part.sink is None:
            try:
                self._fields.append((part.name, part.data.decode()))
            except UnicodeDecodeError:
                raise _malformed(f"field {part.name!r} is not UTF-8 text", part.name) from None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _malformed(reason: str, name: str | None = None) -> ApiError:
    return ApiError(
        400,
        "invalid_multipart",
        f"The multipart/form-data body is malformed: {reason}.",
        pointer=None if name is None else form_pointer(name),
    )


def form_pointer(name: str) -> str:
    """The JSON pointer of a form field: ``data[attributes][x]`` → ``/data/attributes/x``."""
    match = _FORM_ATTRIBUTE.fullmatch(name)
    if match is not None:
        return "/data/attributes/" + pointer_token(match.group(1))
    return "/" + pointer_token(name)


@dataclass(frozen=True, slots=True)
class BodyReader:
    """Reads a create/update body into ``(attributes, errors)`` whatever its content type."""

    max_json_depth: int = 32

    async def attributes(self, request: Request) -> tuple[dict[str, object], FieldErrors]:
        """The ``data.attributes`` mapping, plus field errors found while reading it.

        Errors that leave nothing to validate (bad JSON, missing ``data``) are raised
        at once; per-field ones are returned so validation can add to them.
        """
        media = media_type(request)
        errors = FieldErrors()
        if media in _JSON_TYPES or media.endswith("+json"):
            return self._from_json(await request.body()), errors
        if media != _MULTIPART:
            # The body-limit layer answers this first in the full pipeline.
            raise unsupported_media_type(media, f"application/json or {_MULTIPART}")
        fields = await MultipartReader().read(request)
        return _from_fields(fields, errors), errors

    def _from_json(self, body: bytes) -> dict[str, object]:
        if not body.strip():
            raise ApiError(
                400,
                "parameter_missing",
                f"The request body is empty; send {_EXAMPLE}.",
                pointer="/data",
            )
        try:
            document = json.loads(body)
        except UnicodeDecodeError as exc:
            raise _invalid_json("it is not UTF-8 text") from exc
        except json.JSONDecodeError as exc:
            raise _invalid_json(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
        except RecursionError as exc:
            raise _invalid_json(f"it is nested deeper than {self.max_json_depth} levels") from exc
        except ValueError as exc:
            # int() refuses a literal longer than sys.get_int_max_str_digits() (4300 digits).
            raise _invalid_json("a number in it has too many digits") from exc
        # Counting brackets is cheap and bounds the depth, so typical bodies skip the walk.
        if body.count(b"{") + body.count(b"[") > self.max_json_depth and (
            _depth(document) > self.max_json_depth
        ):
            raise _invalid_json(f"it is nested deeper than {self.max_json_depth} levels")
        if not isinstance(document, dict):
            raise ApiError(
                400,
                "invalid_type",
                f"The request body must be a JSON object: {_EXAMPLE}.",
                pointer="",
            )
        if "data" not in document:
            raise ApiError(400, "parameter_missing", "data is required.", pointer="/data")
        data = document["data"]
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_type", "data must be an object.", pointer="/data")
        if "attributes" not in data:
            raise ApiError(
                400,
                "parameter_missing",
                "data.attributes is required (it may be an empty object).",
                pointer="/data/attributes",
            )
        attributes = data["attributes"]
        if not isinstance(attributes, dict):
            raise ApiError(
                400,
                "invalid_type",
                "data.attributes must be an object.",
                pointer="/data/attributes",
            )
        return attributes


def _invalid_json(reason: str) -> ApiError:
    return ApiError(400, "invalid_json", f"The request body is not valid JSON: {reason}.")


def _depth(document: object) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _from_fields(fields: list[tuple[str, str]], errors: FieldErrors) -> dict[str, object]:
    attributes: dict[str, object] = {}
    for name, value in fields:
        match = _FORM_ATTRIBUTE.fullmatch(name)
        if match is None:
            errors.add(
                400,
                "unknown_parameter",
                f"form field {name!r} is not of the form data[attributes][NAME]",
                form_pointer(name),
            )
        else:
            attributes[match.group(1)] = value
    return attributes
