"""Streamed request and response bodies that can be replayed when a call is retried.

Uploads and downloads never hold a whole file in memory: the multipart body
is generated chunk by chunk from the file object, and downloads are written
chunk by chunk. Both remember where they started so a retry can start over;
when that is impossible (a pipe already read from), they say so and the
retry loop gives up instead of sending half a file.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from ._errors import RetrysafeError

__all__ = ["DownloadSink", "MultipartUpload"]

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
        preamble = bytearray()
        for name, value in fields:
            preamble += b"--" + boundary_bytes + b"\r\n"
            preamble += b'Content-Disposition: form-data; name="' + _quote(name) + b'"\r\n\r\n'
            preamble += value.encode("utf-8") + b"\r\n"
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


class DownloadSink:
    """Where a streamed download goes: a path (written atomically) or a binary file object.

    For a path the bytes go to a temporary file beside it, renamed over the
    path only once the whole body arrived, so a failed call never leaves a
    truncated file under the caller's name.
    """

    def __init__(self, destination: str | os.PathLike[str] | BinaryIO) -> None:
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._start: int | None = None
        self._temporary: Path | None = None
        self._written = 0
        if isinstance(destination, (str, os.PathLike)):
            self._path = Path(destination)
        else:
            self._file = destination
            self._start = _seek_start(destination)

    @property
    def replayable(self) -> bool:
        """Whether a retry can start the body over: rewindable, or nothing written yet."""
        return self._path is not None or self._start is not None or self._written == 0

    def write_all(self, chunks: Iterable[bytes]) -> int:
        """Write the body from its start; returns the number of bytes written."""
        target = self._begin()
        try:
            for chunk in chunks:
                target.write(chunk)
                self._written += len(chunk)
        finally:
            if self._path is not None:
                target.close()
        return self._finish(target)

    async def awrite_all(self, chunks: AsyncIterator[bytes]) -> int:
        """Async flavour of :meth:`write_all` (local writes are blocking, as for uploads)."""
        target = self._begin()
        try:
            async for chunk in chunks:
                target.write(chunk)
                self._written += len(chunk)
        finally:
            if self._path is not None:
                target.close()
        return self._finish(target)

    def _begin(self) -> BinaryIO:
        self._written = 0
        if self._path is not None:
            self.abort()
            fd, name = tempfile.mkstemp(
                dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".part"
            )
            self._temporary = Path(name)
            return open(fd, "wb")
        assert self._file is not None
        if self._start is not None:
            self._file.seek(self._start)
            self._file.truncate()
        return self._file

    def _finish(self, target: BinaryIO) -> int:
        if self._path is not None and self._temporary is not None:
            os.replace(self._temporary, self._path)
            self._temporary = None
        else:
            target.flush()
        return self._written

    def abort(self) -> None:
        """Remove the partial temporary file of an attempt that failed."""
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None
