"""Documents over real HTTP: streamed uploads, checksums, downloads, limits and failures."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .api_calls import by_pointer, create_inquiry, envelope, upload


@pytest.fixture
def inquiry_id(http: httpx.Client) -> str:
    return str(create_inquiry(http, reference_id="holder")["id"])


def stored_files(server) -> list[Path]:
    directory = Path(server.settings.document_dir)
    return sorted(directory.iterdir()) if directory.exists() else []


def test_upload_reports_size_and_sha256_and_download_is_identical(
    server, http: httpx.Client, inquiry_id: str
) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # past Starlette's 1 MiB spooling threshold
    response = upload(http, inquiry_id, content, kind="passport")
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["type"] == "document"
    assert data["id"].startswith("doc_")
    assert response.headers["location"] == f"/api/v1/documents/{data['id']}"
    attributes = data["attributes"]
    assert attributes["size"] == len(content)
    assert attributes["sha256"] == hashlib.sha256(content).hexdigest()
    assert attributes["kind"] == "passport"
    assert attributes["inquiry_id"] == inquiry_id
    assert attributes["filename"] == "scan.bin"
    assert attributes["content_type"] == "application/octet-stream"

    assert http.get(f"/documents/{data['id']}").json()["data"] == data
    download = http.get(f"/documents/{data['id']}/content")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["request-id"].startswith("req_")
    assert [p.name for p in stored_files(server)] == [data["id"]]


def test_an_empty_file_is_a_document_too(http: httpx.Client, inquiry_id: str) -> None:
    response = upload(http, inquiry_id, b"")
    assert response.status_code == 201, response.text
    attributes = response.json()["data"]["attributes"]
    assert attributes["size"] == 0
    assert attributes["sha256"] == hashlib.sha256(b"").hexdigest()
    assert attributes["kind"] is None
    assert http.get(f"/documents/{response.json()['data']['id']}/content").content == b""


def test_upload_is_streamed_not_held_in_memory(
    http: httpx.Client, inquiry_id: str, tmp_path: Path
) -> None:
    """A 24 MiB upload raises the server's (same-process) peak memory by far less than that."""
    source = tmp_path / "big.bin"
    size = 24 * 1024 * 1024
    with source.open("wb") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        with source.open("rb") as file:
            response = http.post(
                f"/inquiries/{inquiry_id}/documents", files={"file": ("big.bin", file)}
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.text
    assert response.json()["data"]["attributes"]["size"] == size
    assert peak < 6 * 1024 * 1024


def test_missing_file_part_is_400_and_leaves_nothing(
    server, http: httpx.Client, inquiry_id: str
) -> None:
    response = http.post(f"/inquiries/{inquiry_id}/documents", files={"kind": (None, "id")})
    errors = envelope(response, 400, "parameter_missing")
    assert by_pointer(errors) == {"/file": ("400", "parameter_missing")}
    assert stored_files(server) == []


def test_form_problems_are_reported_together_and_leave_nothing(
    server, http: httpx.Client, inquiry_id: str
) -> None:
    response = upload(http, inquiry_id, b"data", kind="k" * 65, colour="blue")
    errors = envelope(response, 400)
    assert by_pointer(errors) == {
        "/kind": ("400", "invalid_value"),
        "/colour": ("400", "unknown_parameter"),
    }
    assert stored_files(server) == []


def test_two_file_parts_are_400(http: httpx.Client, inquiry_id: str) -> None:
    files = [("file", ("a", b"1")), ("file", ("b", b"2"))]
    response = http.post(f"/inquiries/{inquiry_id}/documents", files=files)
    envelope(response, 400, "invalid_multipart")


def test_json_upload_is_415(http: httpx.Client, inquiry_id: str) -> None:
    response = http.post(f"/inquiries/{inquiry_id}/documents", json={"file": "x"})
    envelope(response, 415, "unsupported_media_type")


def test_upload_to_unknown_inquiry_is_404(http: httpx.Client) -> None:
    response = upload(http, "inq_00000000000000000000000000", b"x")
    envelope(response, 404, "not_found")


def test_unknown_document_is_404(http: httpx.Client) -> None:
    envelope(http.get("/documents/doc_00000000000000000000000000"), 404, "not_found")
    envelope(http.get("/documents/doc_00000000000000000000000000/content"), 404, "not_found")


def test_upload_over_max_upload_is_413_and_leaves_nothing(live_server) -> None:
    server = live_server(max_upload=64 * 1024)
    with server.client(server.new_key()) as http:
        inquiry_id = create_inquiry(http, reference_id="r")["id"]
        response = upload(http, inquiry_id, os.urandom(100 * 1024))
        envelope(response, 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as it streams
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
            for _ in range(10):
                yield os.urandom(16 * 1024)
            yield b"\r\n--b--\r\n"

        response = http.post(
            f"/inquiries/{inquiry_id}/documents",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        envelope(response, 413, "payload_too_large")
        assert upload(http, inquiry_id, b"small").status_code == 201
    assert len(stored_files(server)) == 1


def test_replayed_upload_stores_one_document(server, http: httpx.Client, inquiry_id: str) -> None:
    headers = {"Idempotency-Key": "upload-1"}
    files = {"file": ("a.txt", b"same bytes", "text/plain")}
    first = http.post(f"/inquiries/{inquiry_id}/documents", files=files, headers=headers)
    second = http.post(f"/inquiries/{inquiry_id}/documents", files=files, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert len(stored_files(server)) == 1


def test_storage_failure_is_a_500_that_reveals_nothing(live_server, tmp_path: Path) -> None:
    """A document_dir that is a file makes the upload fail for real; the body names only the id."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way")
    server = live_server(document_dir=blocker / "documents")
    with server.client(server.new_key()) as http:
        inquiry_id = create_inquiry(http, reference_id="r")["id"]
        response = upload(http, inquiry_id, b"content")
        errors = envelope(response, 500, "internal_error")
        assert len(errors) == 1
        details = errors[0]["details"]
        assert response.headers["request-id"] in details
        for leak in ("Traceback", "NotADirectory", "Errno", str(tmp_path), "documents", ".py"):
            assert leak not in response.text
        assert set(errors[0]) == {"title", "details", "status", "code"}
