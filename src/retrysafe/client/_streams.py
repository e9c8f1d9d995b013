"""Streamed request and response bodies that can be replayed when a call is retried.

Uploads and downloads never hold a whole file in memory: the multipart body
is generated chunk by chunk from the file object, and downloads are written
chunk by chunk. An upload remembers where it started so a retry can start
over; a download remembers how far it got so a retry can resume there. When
neither is possible (a pipe already read from), they say so and the retry
loop gives up instead of sending half a file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from ._errors import RetrysafeError

__all__ = ["DamagedDownloadError", "DownloadSink", "MultipartUpload", "encode_form"]

CHUNK_SIZE = 64 * 1024


def _quote(value: str) -> bytes:
    # The HTML living standard's escaping for multipart names and filenames:
    # what every server-side multipart parser expects.
    escaped = value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode("utf-8")


def _seek_start(file: BinaryIO) -> int | None:
    """The file's current offset when it can be rewound to it, else ``None``."""
    try:
        if not file.seekable():
            return None
        return file.tell()
    except (AttributeError, OSError, ValueError):
        return None


class MultipartUpload:
    """A ``multipart/form-data`` body: text fields, then one file part streamed from ``file``.

    The part is read from the file's current offset in ``CHUNK_SIZE`` pieces.
    For seekable files the length is known up front (so the request carries
    ``Content-Length`` and the server can refuse an oversized upload before
    reading it) and every retry re-reads from the same offset. The boundary
    is fixed per upload so every attempt sends identical bytes.
    """

    def __init__(
        self,
        *,
        file: BinaryIO,
        filename: str,
        content_type: str = "application/octet-stream",
        file_field: str = "file",
        fields: Sequence[tuple[str, str]] = (),
        boundary: str | None = None,
    ) -> None:
        if isinstance(cast(object, file), io.TextIOBase):  # typed BinaryIO, but callers err
            raise TypeError("uploads need a file opened in binary mode ('rb')")
        self._file = file
        self._boundary = boundary or uuid.uuid4().hex
        self._start = _seek_start(file)
        self._size: int | None = None
        if self._start is not None:
            self._size = file.seek(0, os.SEEK_END) - self._start
            file.seek(self._start)
        self._started = False
        boundary_bytes = self._boundary.encode("ascii")
        preamble = _text_parts(fields, boundary_bytes)
        preamble += b"--" + boundary_bytes + b"\r\n"
        preamble += (
            b'Content-Disposition: form-data; name="'
            + _quote(file_field)
            + b'"; filename="'
            + _quote(filename)
            + b'"\r\n'
        )
        preamble += b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n"
        self._preamble = bytes(preamble)
        self._epilogue = b"\r\n--" + boundary_bytes + b"--\r\n"

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self._boundary}"

    @property
    def content_length(self) -> int | None:
        """Length of the whole body, or ``None`` for a non-seekable source (sent chunked)."""
        if self._size is None:
            return None
        return len(self._preamble) + self._size + len(self._epilogue)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.content_length is not None:
            headers["Content-Length"] = str(self.content_length)
        return headers

    @property
    def replayable(self) -> bool:
        """Whether the body can be produced (again): seekable, or never read yet."""
        return self._start is not None or not self._started

    def iter_bytes(self) -> Iterator[bytes]:
        """The body from its first byte; each call starts over (for seekable sources)."""
        if not self.replayable:
            raise RetrysafeError("the upload source is not seekable and was already sent")
        self._started = True
        yield self._preamble
        yield from self._file_chunks()
        yield self._epilogue

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Async flavour of :meth:`iter_bytes`.

        The reads are blocking, like httpx's own multipart encoder: a 64 KiB
        read from a local file costs microseconds, far less than a thread hop.
        """
        for chunk in self.iter_bytes():
            yield chunk

    def _file_chunks(self) -> Iterator[bytes]:
        if self._start is None or self._size is None:
            while chunk := self._file.read(CHUNK_SIZE):
                yield chunk
            return
        self._file.seek(self._start)
        left = self._size
        while left > 0:
            chunk = self._file.read(min(CHUNK_SIZE, left))
            if not chunk:
                # Content-Length already promised more: sending less would hang the server.
                raise RetrysafeError("the upload source shrank while it was being sent")
            left -= len(chunk)
            yield chunk


def encode_form(fields: Sequence[tuple[str, str]], boundary: str) -> bytes:
    """A ``multipart/form-data`` body of text fields only (a create sent as a form).

    Small by construction (it replaces a JSON body the client already held),
    so it is built whole rather than streamed.
    """
    boundary_bytes = boundary.encode("ascii")
    body = _text_parts(fields, boundary_bytes)
    body += b"--" + boundary_bytes + b"--\r\n"
    return bytes(body)


def _text_parts(fields: Sequence[tuple[str, str]], boundary: bytes) -> bytearray:
    """One ``form-data`` part per text field, each opened by the boundary line."""
    parts = bytearray()
    for name, value in fields:
        parts += b"--" + boundary + b"\r\n"
        parts += b'Content-Disposition: form-data; name="' + _quote(name) + b'"\r\n\r\n'
        parts += value.encode("utf-8") + b"\r\n"
    return parts


class DamagedDownloadError(RetrysafeError):
    """The downloaded bytes fail the length or SHA-256 the server announced.

    Internal to a call: the client starts the download over (a retry);
    only when the retries run out does the caller see an
    :class:`~retrysafe.UnexpectedResponseError`.
    """


def parse_repr_digest(value: str | None) -> bytes | None:
    """The SHA-256 of a ``Repr-Digest`` header (RFC 9530: ``sha-256=:<base64>:``), if any."""
    if not value:
        return None
    for member in value.split(","):
        algorithm, _, encoded = member.strip().partition("=")
        if algorithm.strip().lower() != "sha-256":
            continue
        encoded = encoded.strip()
        if len(encoded) < 2 or not (encoded.startswith(":") and encoded.endswith(":")):
            return None
        try:
            digest = base64.b64decode(encoded[1:-1], validate=True)
        except ValueError:
            return None
        return digest if len(digest) == hashlib.sha256().digest_size else None
    return None


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes FIRST-LAST/TOTAL`` as ``(first, last, total)``; ``None`` when unusable."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    try:
        return int(first), int(last), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


class DownloadSink:
    """Where a streamed download goes: a path (written atomically) or a binary file object.

    For a path the bytes go to a temporary file beside it, renamed over the
    path only once the whole body arrived and checked, so a failed call
    never leaves a truncated file under the caller's name.

    A cut download is **resumed**: the sink remembers how many bytes it holds
    and the answer's strong ``ETag``, so the retry asks for the rest
    (``Range: bytes=N-`` with ``If-Range``); a ``206`` is appended, a ``200``
    (the server ignored the range, or the content changed) starts over. The
    result is checked against the length and the ``Repr-Digest`` SHA-256
    the server sent; a mismatch starts the download over.
    """

    def __init__(self, destination: str | os.PathLike[str] | BinaryIO) -> None:
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._start: int | None = None
        self._temporary: Path | None = None
        self._target: BinaryIO | None = None
        self._written = 0
        self._sha256 = hashlib.sha256()
        self._validator: str | None = None
        self._expected_size: int | None = None
        self._expected_sha256: bytes | None = None
        self.resumed_from: list[int] = []
        """Offsets at which an attempt resumed (one entry per ``206`` appended)."""
        if isinstance(destination, (str, os.PathLike)):
            self._path = Path(destination)
        else:
            self._file = destination
            self._start = _seek_start(destination)

    @property
    def written(self) -> int:
        return self._written

    @property
    def _can_restart(self) -> bool:
        return self._path is not None or self._start is not None or self._written == 0

    @property
    def replayable(self) -> bool:
        """Whether another attempt can go on: restart from byte 0, or resume where it stopped."""
        return self._can_restart or self._validator is not None

    def request_headers(self) -> dict[str, str]:
        """``Range`` and ``If-Range`` when there is something to resume, else nothing."""
        if self._written == 0 or self._validator is None:
            return {}
        return {"Range": f"bytes={self._written}-", "If-Range": self._validator}

    def begin(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Take a 2xx answer's head: append a ``206`` at our offset, or start over on a ``200``."""
        if status_code == 206:
            content_range = _content_range(headers.get("content-range"))
            etag = headers.get("etag")
            if (
                self._written > 0
                and content_range is not None
                and content_range[0] == self._written
                and (etag is None or etag == self._validator)
            ):
                if content_range[2] is not None:
                    self._expected_size = content_range[2]
                self.resumed_from.append(self._written)
                self._open()
                return
            self._forget_validator()
            raise DamagedDownloadError(
                f"the server answered the resume at byte {self._written} with"
                f" Content-Range {headers.get('content-range')!r}"
            )
        if not self._can_restart:
            raise RetrysafeError(
                "the server sent the whole document again and the destination cannot be rewound"
            )
        self._restart()
        etag = headers.get("etag")
        self._validator = etag if etag and not etag.startswith("W/") else None
        length = headers.get("content-length")
        self._expected_size = int(length) if length and length.isdigit() else None
        self._expected_sha256 = parse_repr_digest(headers.get("repr-digest"))

    def write(self, chunk: bytes) -> None:
        assert self._target is not None, "begin() first"
        self._target.write(chunk)
        self._sha256.update(chunk)
        self._written += len(chunk)

    def finish(self) -> int:
        """Check the whole body against what the server announced, then put it in place."""
        problem = None
        if self._expected_size is not None and self._written != self._expected_size:
            problem = f"{self._written} bytes arrived, the server announced {self._expected_size}"
        elif self._expected_sha256 is not None and self._sha256.digest() != self._expected_sha256:
            problem = "the bytes do not match the server's Repr-Digest SHA-256"
        if problem is not None:
            # Start over on the next attempt: the bytes we hold cannot be trusted.
            self._forget_validator()
            self._written = 0
            raise DamagedDownloadError(problem)
        target = self._target
        assert target is not None
        self._target = None
        if self._path is not None and self._temporary is not None:
            target.close()
            os.replace(self._temporary, self._path)
            self._temporary = None
        else:
            target.flush()
        return self._written

    def abort(self) -> None:
        """The call failed: remove the partial temporary file (a file object keeps its bytes)."""
        if self._path is not None and self._target is not None:
            self._target.close()
        self._target = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None

    def _forget_validator(self) -> None:
        self._validator = None

    def _restart(self) -> None:
        self._written = 0
        self._sha256 = hashlib.sha256()
        self.resumed_from.clear()
        if self._path is not None:
            if self._target is None:
                fd, name = tempfile.mkstemp(
                    dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".part"
                )
                self._temporary = Path(name)
                self._target = open(fd, "w+b")  # noqa: SIM115 - closed by finish() or abort()
            self._target.seek(0)
            self._target.truncate()
            return
        assert self._file is not None
        if self._start is not None:
            self._file.seek(self._start)
            self._file.truncate()
        self._target = self._file

    def _open(self) -> None:
        """Reposition for appending after a resume (the last attempt may have left it anywhere)."""
        if self._path is not None:
            assert self._target is not None, "a resume follows an attempt that opened the file"
            self._target.seek(self._written)
            self._target.truncate()
            return
        assert self._file is not None
        if self._start is not None:
            self._file.seek(self._start + self._written)
            self._file.truncate()
        self._target = self._file
