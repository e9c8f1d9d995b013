"""Uploads and downloads stream in bounded chunks and can start over for a retry."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrysafe import RetrysafeError
from retrysafe.client._streams import CHUNK_SIZE, DownloadSink, MultipartUpload


class RecordingFile(io.BytesIO):
    """A BytesIO that remembers the size of every read, to prove nothing is read whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_sizes: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.read_sizes.append(-1 if size is None else size)
        return super().read(size)


class Unseekable(io.RawIOBase):
    """A pipe-like source: readable once, no seek, no tell."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def httpx_encoding(data: bytes, boundary: str) -> bytes:
    """The same form as encoded by httpx's own multipart encoder, as the reference."""
    stream = httpx._multipart.MultipartStream(
        data={"kind": "passport"},
        files={"file": ("scan.bin", io.BytesIO(data), "application/octet-stream")},
        boundary=boundary.encode(),
    )
    return b"".join(stream)


def test_body_is_byte_identical_to_httpx_multipart() -> None:
    data = os.urandom(200_000)
    upload = MultipartUpload(
        file=io.BytesIO(data), filename="scan.bin", fields=[("kind", "passport")], boundary="b0und"
    )
    body = b"".join(upload.iter_bytes())
    assert body == httpx_encoding(data, "b0und")
    assert upload.content_length == len(body)
    assert upload.headers == {
        "Content-Type": "multipart/form-data; boundary=b0und",
        "Content-Length": str(len(body)),
    }


def test_file_is_read_in_bounded_chunks_never_whole() -> None:
    """A 3 MiB file is read 64 KiB at a time, so memory use does not grow with the file."""
    source = RecordingFile(os.urandom(3 * 1024 * 1024))
    upload = MultipartUpload(file=source, filename="big.bin")
    chunks = list(upload.iter_bytes())
    assert max(source.read_sizes) == CHUNK_SIZE
    assert -1 not in source.read_sizes
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE


def test_seekable_body_replays_from_the_callers_offset() -> None:
    """A retry re-sends the same bytes, starting where the caller's file object stood."""
    source = io.BytesIO(b"HEADERtail-of-file")
    source.seek(6)
    upload = MultipartUpload(file=source, filename="t.txt", boundary="x")
    first = b"".join(upload.iter_bytes())
    assert upload.replayable
    second = b"".join(upload.iter_bytes())
    assert first == second
    assert b"tail-of-file" in first
    assert b"HEADER" not in first
    assert upload.content_length == len(first)


def test_unseekable_source_is_sent_chunked_and_only_once() -> None:
    upload = MultipartUpload(file=Unseekable(b"stream"), filename="pipe")  # type: ignore[arg-type]
    assert upload.content_length is None
    assert "Content-Length" not in upload.headers
    before = upload.replayable
    body = b"".join(upload.iter_bytes())
    assert b"stream" in body
    assert (before, upload.replayable) == (True, False)
    with pytest.raises(RetrysafeError):
        list(upload.iter_bytes())


def test_source_that_shrinks_mid_upload_fails_loudly(tmp_path: Path) -> None:
    """Content-Length promised more bytes: sending fewer would hang the server."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    with path.open("rb") as source:
        upload = MultipartUpload(file=source, filename="f")
        path.write_bytes(b"x" * 10)
        with pytest.raises(RetrysafeError, match="shrank"):
            list(upload.iter_bytes())


def test_text_mode_file_is_refused() -> None:
    with pytest.raises(TypeError, match="binary"):
        MultipartUpload(file=io.StringIO("text"), filename="t")  # type: ignore[arg-type]


async def test_async_iteration_yields_the_same_bytes() -> None:
    upload = MultipartUpload(file=io.BytesIO(b"abc"), filename="a", boundary="q")
    chunks = [chunk async for chunk in upload.aiter_bytes()]
    assert b"".join(chunks) == b"".join(upload.iter_bytes())


class TestDownloadSink:
    def test_path_is_replaced_only_when_complete(self, tmp_path: Path) -> None:
        target = tmp_path / "out.bin"
        target.write_bytes(b"old")
        sink = DownloadSink(target)
        assert sink.write_all([b"new ", b"content"]) == 11
        assert target.read_bytes() == b"new content"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def test_failed_download_leaves_the_old_file_and_no_temporary(self, tmp_path: Path) -> None:
        target = tmp_path / "out.bin"
        target.write_bytes(b"old")
        sink = DownloadSink(target)

        def broken() -> Any:
            yield b"partial"
            raise httpx.ReadError("reset")

        with pytest.raises(httpx.ReadError):
            sink.write_all(broken())
        sink.abort()
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
        assert sink.replayable

    def test_file_object_is_rewound_and_truncated_for_a_retry(self) -> None:
        target = io.BytesIO(b"keep:")
        target.seek(5)
        sink = DownloadSink(target)
        sink.write_all([b"first attempt, longer"])
        sink.write_all([b"second"])
        assert target.getvalue() == b"keep:second"

    def test_unseekable_destination_cannot_restart_once_written(self) -> None:
        class Pipe(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                return len(data)

        sink = DownloadSink(Pipe())  # type: ignore[arg-type]
        assert sink.replayable
        sink.write_all([b"x"])
        assert not sink.replayable

    async def test_async_write(self, tmp_path: Path) -> None:
        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        target = tmp_path / "o"
        assert await DownloadSink(target).awrite_all(chunks()) == 2
        assert target.read_bytes() == b"ab"
