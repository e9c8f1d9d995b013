"""A document's content can be checked and resumed: ETag, Repr-Digest and single byte ranges."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import pytest

from .api_calls import create_inquiry, envelope, upload

CONTENT = os.urandom(200_000)


@pytest.fixture
def content_url(http: httpx.Client) -> str:
    inquiry_id = create_inquiry(http, reference_id="ranges")["id"]
    response = upload(http, inquiry_id, CONTENT)
    assert response.status_code == 201, response.text
    return f"/documents/{response.json()['data']['id']}/content"


def test_whole_content_names_its_sha256_as_etag_and_repr_digest(
    http: httpx.Client, content_url: str
) -> None:
    response = http.get(content_url)
    assert response.status_code == 200
    assert response.content == CONTENT
    digest = hashlib.sha256(CONTENT)
    assert response.headers["etag"] == f'"{digest.hexdigest()}"'
    assert response.headers["repr-digest"] == (
        f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    )
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["content-disposition"] == 'attachment; filename="scan.bin"'
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("range_header", "start", "stop"),
    [
        ("bytes=150000-", 150_000, len(CONTENT)),
        ("bytes=10-19", 10, 20),
        ("bytes=-5", len(CONTENT) - 5, len(CONTENT)),
        ("bytes=199990-999999", 199_990, len(CONTENT)),
    ],
)
def test_one_range_is_a_206_with_that_part(
    http: httpx.Client, content_url: str, range_header: str, start: int, stop: int
) -> None:
    whole = http.get(content_url)
    response = http.get(
        content_url, headers={"Range": range_header, "If-Range": whole.headers["etag"]}
    )
    assert response.status_code == 206
    assert response.content == CONTENT[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(stop - start)
    # The validators describe the whole document, so the client can check the sum of parts.
    assert response.headers["etag"] == whole.headers["etag"]
    assert response.headers["repr-digest"] == whole.headers["repr-digest"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Range": "bytes=0-9", "If-Range": '"another version"'},
        {"Range": "bytes=0-9,20-29"},
        {"Range": "bytes=9-0"},
        {"Range": "lines=1-2"},
        {"Range": "bytes=abc"},
        {"Range": "bytes=²-".encode("latin-1")},
    ],
    ids=["other-version", "several", "backwards", "other-unit", "garbage", "unicode-digit"],
)
def test_ranges_it_does_not_honour_get_the_whole_document(
    http: httpx.Client, content_url: str, headers: dict[str, str | bytes]
) -> None:
    """RFC 9110 §14.2 lets a server ignore a Range; it never turns one into an error page."""
    response = http.get(content_url, headers=headers)
    assert response.status_code == 200
    assert response.content == CONTENT


@pytest.mark.parametrize("range_header", [f"bytes={len(CONTENT)}-", "bytes=-0"])
def test_a_range_past_the_end_is_a_416_in_the_envelope(
    http: httpx.Client, content_url: str, range_header: str
) -> None:
    response = http.get(content_url, headers={"Range": range_header})
    envelope(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


def test_an_empty_document_ignores_ranges(http: httpx.Client) -> None:
    inquiry_id = create_inquiry(http, reference_id="empty")["id"]
    document = upload(http, inquiry_id, b"").json()["data"]
    response = http.get(f"/documents/{document['id']}/content", headers={"Range": "bytes=0-"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == f'"{hashlib.sha256(b"").hexdigest()}"'
