"""Uploads and downloads stream in bounded chunks and can start over for a retry."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrysafe import RetrysafeError
from retrysafe.client._streams import (
    CHUNK_SIZE,
    DamagedDownloadError,
    DownloadSink,
    MultipartUpload,
    encode_form,
    parse_repr_digest,
)


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


def sha256_digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def whole(data: bytes, etag: str | None = '"v1"', digest: bool = True) -> dict[str, str]:
    """The head of a 200 carrying ``data``."""
    headers = {"content-length": str(len(data))}
    if etag is not None:
        headers["etag"] = etag
    if digest:
        headers["repr-digest"] = sha256_digest(data)
    return headers


def rest(data: bytes, start: int, etag: str = '"v1"') -> dict[str, str]:
    """The head of a 206 carrying ``data[start:]``."""
    return {
        "content-range": f"bytes {start}-{len(data) - 1}/{len(data)}",
        "content-length": str(len(data) - start),
        "etag": etag,
    }


def receive(sink: DownloadSink, status: int, headers: dict[str, str], *chunks: bytes) -> None:
    sink.begin(status, headers)
    for chunk in chunks:
        sink.write(chunk)


class TestDownloadSink:
    def test_path_is_replaced_only_when_complete(self, tmp_path: Path) -> None:
        target = tmp_path / "out.bin"
        target.write_bytes(b"old")
        sink = DownloadSink(target)
        receive(sink, 200, whole(b"new content"), b"new ", b"content")
        assert target.read_bytes() == b"old"
        assert sink.finish() == 11
        assert target.read_bytes() == b"new content"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def test_failed_download_leaves_the_old_file_and_no_temporary(self, tmp_path: Path) -> None:
        target = tmp_path / "out.bin"
        target.write_bytes(b"old")
        sink = DownloadSink(target)
        receive(sink, 200, whole(b"partial and more"), b"partial")
        sink.abort()
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def test_a_cut_download_asks_for_the_rest_and_appends_it(self, tmp_path: Path) -> None:
        data = os.urandom(10_000)
        target = tmp_path / "doc.bin"
        sink = DownloadSink(target)
        assert sink.request_headers() == {}
        receive(sink, 200, whole(data), data[:4000])  # then the connection is cut
        assert sink.request_headers() == {"Range": "bytes=4000-", "If-Range": '"v1"'}
        receive(sink, 206, rest(data, 4000), data[4000:])
        assert sink.finish() == len(data)
        assert target.read_bytes() == data
        assert sink.resumed_from == [4000]

    def test_a_200_to_a_resume_starts_over(self, tmp_path: Path) -> None:
        """The server ignored the range (or the content changed): the whole body replaces ours."""
        data = b"the whole document"
        sink = DownloadSink(tmp_path / "d")
        receive(sink, 200, whole(b"old version, longer", etag='"v0"', digest=False), b"old ver")
        receive(sink, 200, whole(data), data)
        assert sink.finish() == len(data)
        assert (tmp_path / "d").read_bytes() == data
        assert sink.resumed_from == []

    def test_no_strong_validator_no_resume(self, tmp_path: Path) -> None:
        """Without a strong ETag the rest could belong to another version: start over."""
        sink = DownloadSink(tmp_path / "d")
        receive(sink, 200, whole(b"abcdef", etag='W/"weak"'), b"abc")
        assert sink.request_headers() == {}
        sink.abort()

    def test_a_resume_at_the_wrong_offset_is_damage(self, tmp_path: Path) -> None:
        data = b"0123456789"
        sink = DownloadSink(tmp_path / "d")
        receive(sink, 200, whole(data), data[:4])
        with pytest.raises(DamagedDownloadError, match="Content-Range"):
            sink.begin(206, rest(data, 2))
        assert sink.request_headers() == {}  # the next attempt asks for everything
        sink.abort()
        assert list(tmp_path.iterdir()) == []

    def test_a_wrong_digest_is_damage_and_the_next_attempt_starts_over(
        self, tmp_path: Path
    ) -> None:
        data = b"genuine content"
        target = tmp_path / "d"
        sink = DownloadSink(target)
        receive(sink, 200, whole(data), b"tampered conten")
        with pytest.raises(DamagedDownloadError, match="SHA-256"):
            sink.finish()
        assert not target.exists()
        assert sink.request_headers() == {}
        receive(sink, 200, whole(data), data)
        assert sink.finish() == len(data)
        assert target.read_bytes() == data

    def test_a_short_body_is_damage(self, tmp_path: Path) -> None:
        sink = DownloadSink(tmp_path / "d")
        receive(sink, 200, whole(b"0123456789", digest=False), b"01234")
        with pytest.raises(DamagedDownloadError, match="5 bytes arrived"):
            sink.finish()
        sink.abort()

    def test_file_object_is_rewound_and_truncated_for_a_restart(self) -> None:
        target = io.BytesIO(b"keep:")
        target.seek(5)
        sink = DownloadSink(target)
        receive(sink, 200, whole(b"first attempt, longer", etag=None), b"first attempt, longer")
        receive(sink, 200, whole(b"second", etag=None), b"second")
        assert sink.finish() == 6
        assert target.getvalue() == b"keep:second"

    def test_file_object_is_resumed_at_its_offset(self) -> None:
        data = b"abcdefghij"
        target = io.BytesIO(b"keep:")
        target.seek(5)
        sink = DownloadSink(target)
        receive(sink, 200, whole(data), data[:3])
        receive(sink, 206, rest(data, 3), data[3:])
        assert sink.finish() == 10
        assert target.getvalue() == b"keep:" + data

    def test_unseekable_destination_can_resume_but_not_restart(self) -> None:
        class Pipe(io.RawIOBase):
            def __init__(self) -> None:
                self.received = b""

            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                self.received += bytes(data)
                return len(data)

        pipe = Pipe()
        sink = DownloadSink(pipe)  # type: ignore[arg-type]
        assert sink.replayable
        receive(sink, 200, whole(b"abcdef", etag=None), b"abc")
        assert not sink.replayable  # no validator to resume with, no way to rewind
        resumable = DownloadSink(Pipe())  # type: ignore[arg-type]
        receive(resumable, 200, whole(b"abcdef"), b"abc")
        assert resumable.replayable
        with pytest.raises(RetrysafeError, match="cannot be rewound"):
            resumable.begin(200, whole(b"abcdef"))
        resumable.begin(206, rest(b"abcdef", 3))
        resumable.write(b"def")
        assert resumable.finish() == 6


@pytest.mark.parametrize(
    ("header", "digest"),
    [
        (sha256_digest(b"x"), hashlib.sha256(b"x").digest()),
        ("sha-512=:AAAA:, " + sha256_digest(b"x"), hashlib.sha256(b"x").digest()),
        ("sha-256=:not base64:", None),
        ("sha-256=:" + base64.b64encode(b"short").decode() + ":", None),
        (None, None),
    ],
)
def test_repr_digest_parsing(header: str | None, digest: bytes | None) -> None:
    assert parse_repr_digest(header) == digest


def test_form_is_what_httpx_would_send_for_the_same_fields() -> None:
    fields = [("data[attributes][name_first]", "Ada"), ("data[attributes][name_last]", "Lé")]
    stream = httpx._multipart.MultipartStream(data=dict(fields), files={}, boundary=b"bnd")
    assert encode_form(fields, "bnd") == b"".join(stream)
