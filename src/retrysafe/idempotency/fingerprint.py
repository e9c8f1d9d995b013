"""Request fingerprints: what makes two requests with one key "the same request".

The fingerprint covers method, the concrete path, the query and the request's
*parameters*, not its bytes: a JSON body is compared as canonical JSON, and a
multipart body as its fields (strings) and the SHA-256 of each file, laid out as
the JSON it stands for (``data[attributes][name]`` → ``{"data": {"attributes":
{"name": …}}}``). So a retry that re-encodes the same parameters still matches,
and a multipart field matches a JSON string of the same value. Bodies are fed in
chunks; nothing here holds an upload whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


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
    return RawDigest()


def request_fingerprint(method: str, path: str, query: bytes, params: ParamsDigest) -> str:
    material = "\n".join((method, path, query.decode("latin-1"), params.digest()))
    return hashlib.sha256(material.encode()).hexdigest()


def canonical_json(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # JSON may spell a lone surrogate ("\ud800"); it is no UTF-8 text, but it still has
    # one deterministic encoding, which no valid string shares. The handler, not the
    # fingerprint, decides what such a body deserves (422), key or no key.
    return text.encode("utf-8", "surrogatepass")


class RawDigest:
    """Anything that is not JSON or multipart is compared byte for byte."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def digest(self) -> str:
        return "raw:" + self._hash.hexdigest()


class JsonDigest:
    """Canonical JSON; a body that does not parse is compared as raw bytes."""

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
            return "raw:" + hashlib.sha256(body).hexdigest()
        return "params:" + hashlib.sha256(canonical_json(value)).hexdigest()


class MultipartDigest:
    """Fields as strings and files as SHA-256, parsed while the body streams past."""

    def __init__(self, boundary: bytes) -> None:
        self._raw = RawDigest()
        self._params: dict[str, Any] = {}
        self._failed = False
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._filename: bytes | None = None
        self._field = bytearray()
        self._file_hash = hashlib.sha256()
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
        self._raw.feed(chunk)
        if self._failed:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            # A body we cannot parse still has a deterministic identity: its bytes.
            self._failed = True

    def digest(self) -> str:
        if self._failed:
            return self._raw.digest()
        return "params:" + hashlib.sha256(canonical_json(self._params)).hexdigest()

    def _on_part_begin(self) -> None:
        self._name, self._filename = "", None
        self._field.clear()
        self._file_hash = hashlib.sha256()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            self._name = options.get(b"name", b"").decode("utf-8", "replace")
            self._filename = options.get(b"filename")
        self._header_field, self._header_value = b"", b""

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._filename is None:
            self._field += data[start:end]
        else:
            self._file_hash.update(data[start:end])

    def _on_part_end(self) -> None:
        if self._filename is None:
            value: str = self._field.decode("utf-8", "replace")
        else:
            value = "sha256:" + self._file_hash.hexdigest()
        _place(self._params, self._name, value)


def _place(tree: dict[str, Any], name: str, value: str) -> None:
    """Put ``value`` where ``a[b][c]`` points; repeated names become lists."""
    head, _, rest = name.partition("[")
    path = [head, *_BRACKETS.findall("[" + rest)] if rest else [head]
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    leaf = path[-1]
    if leaf in node:
        existing = node[leaf]
        node[leaf] = [*existing, value] if isinstance(existing, list) else [existing, value]
    else:
        node[leaf] = value
