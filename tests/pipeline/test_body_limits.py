"""BodyLimitLayer: 415 for unsupported content types, 413 by declared length and while streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http import HTTPStatus

import pytest

from retrysafe.pipeline.body_limits import BodyLimitLayer, PayloadTooLarge
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.rate_limit import RateLimiter, RateLimitLayer

from .asgi_apps import EchoApp, client, drive, http_scope

MAX_BODY = 100
MAX_UPLOAD = 1000
MULTIPART = "multipart/form-data; boundary=xyz"


def layered(app: EchoApp) -> ErrorEnvelopeLayer:
    return ErrorEnvelopeLayer(BodyLimitLayer(app, max_body=MAX_BODY, max_upload=MAX_UPLOAD))


def error_of(response_json: object) -> dict[str, str]:
    assert isinstance(response_json, dict)
    [error] = response_json["errors"]
    assert isinstance(error, dict)
    return error


async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
        "application/problem+json; charset=utf-8",
    ],
)
async def test_json_bodies_within_the_limit_pass(content_type: str) -> None:
    """JSON and application/*+json bodies, with parameters, reach the app whole."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post(
            "/x", content=b"1" * MAX_BODY, headers={"content-type": content_type}
        )
    assert response.status_code == 200
    assert response.json() == {"received": MAX_BODY}


async def test_declared_json_body_over_max_body_is_413_before_reading() -> None:
    """Content-Length past max_body is answered at once; the app never runs."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post(
            "/x", content=b"1" * (MAX_BODY + 1), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    error = error_of(response.json())
    assert error["code"] == "payload_too_large"
    assert error["title"] == HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase
    assert f"{MAX_BODY + 1} bytes" in error["details"]
    assert f"limited to {MAX_BODY} bytes" in error["details"]
    assert app.calls == 0


async def test_multipart_uses_max_upload() -> None:
    """A multipart body may exceed max_body up to max_upload, and not beyond."""
    app = EchoApp()
    async with client(layered(app)) as http:
        fits = await http.post("/x", content=b"m" * MAX_UPLOAD, headers={"content-type": MULTIPART})
        too_big = await http.post(
            "/x", content=b"m" * (MAX_UPLOAD + 1), headers={"content-type": MULTIPART}
        )
    assert fits.status_code == 200
    assert fits.json() == {"received": MAX_UPLOAD}
    assert too_big.status_code == 413
    assert (
        f"multipart uploads are limited to {MAX_UPLOAD} bytes"
        in error_of(too_big.json())["details"]
    )
    assert app.calls == 1


async def test_real_multipart_upload_from_httpx_is_accepted() -> None:
    """httpx's own multipart encoding (quoted boundary) is recognised."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post(
            "/x", data={"data[attributes][kind]": "passport"}, files={"file": b"abc"}
        )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"content-type": "text/plain"}, "got 'text/plain'"),
        ({"content-type": "application/x-www-form-urlencoded"}, "got 'application/x-www-form"),
        ({"content-type": "application/jsonx"}, "got 'application/jsonx'"),
        ({"content-type": "multipart/form-data"}, "needs a boundary parameter"),
        ({}, "no Content-Type"),
    ],
)
async def test_unsupported_content_type_on_a_body_is_415(
    headers: dict[str, str], fragment: str
) -> None:
    """A body must be JSON or multipart; the details name what is accepted and what came."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post("/x", content=b"{}", headers=headers)
    assert response.status_code == 415
    error = error_of(response.json())
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["details"]
    assert "multipart/form-data" in error["details"]
    assert fragment in error["details"]
    assert app.calls == 0


async def test_415_comes_before_413() -> None:
    """An oversized body of the wrong type is told about its type first."""
    async with client(layered(EchoApp())) as http:
        response = await http.post(
            "/x", content=b"1" * (MAX_BODY + 1), headers={"content-type": "text/plain"}
        )
    assert response.status_code == 415


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
async def test_requests_without_a_body_are_not_subject_to_415(method: str) -> None:
    """No body (no Content-Length, or 0) means no Content-Type requirement."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.request(method, "/x")
        empty = await http.request(method, "/x", headers={"content-length": "0"})
    assert response.status_code == 200
    assert empty.status_code == 200
    assert app.calls == 2


async def test_chunked_body_growing_past_the_limit_is_413() -> None:
    """A body without Content-Length is counted as received and stopped past the limit."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post(
            "/x", content=chunks(40, 10), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    error = error_of(response.json())
    assert error["code"] == "payload_too_large"
    assert f"limited to {MAX_BODY} bytes" in error["details"]
    assert app.calls == 1
    assert app.completed == 0  # the app saw the error while reading, before acting


async def test_chunked_body_within_the_limit_passes() -> None:
    """A chunked body that stays under the limit is delivered whole."""
    app = EchoApp()
    async with client(layered(app)) as http:
        response = await http.post(
            "/x", content=chunks(25, 4), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert response.json() == {"received": 100}


async def test_body_longer_than_its_content_length_is_stopped_at_the_limit() -> None:
    """A lying Content-Length does not let a body past the limit."""
    layer = BodyLimitLayer(EchoApp(), max_body=MAX_BODY, max_upload=MAX_UPLOAD)
    scope = http_scope(headers=[(b"content-type", b"application/json"), (b"content-length", b"10")])
    with pytest.raises(PayloadTooLarge) as raised:
        await drive(layer, scope, [b"x" * 60, b"x" * 60])
    assert raised.value.status == 413


async def test_streamed_413_carries_no_rate_limit_headers() -> None:
    """Like the Content-Length 413, a streamed 413 is the body layer's answer, above the limiter."""
    limiter = RateLimiter.from_settings("10/minute")
    app = ErrorEnvelopeLayer(
        BodyLimitLayer(RateLimitLayer(EchoApp(), limiter), max_body=MAX_BODY, max_upload=MAX_UPLOAD)
    )
    async with client(app) as http:
        response = await http.post(
            "/x", content=chunks(60, 3), headers={"content-type": "application/json"}
        )
        ok = await http.post("/x", json={})
    assert response.status_code == 413
    assert "ratelimit-limit" not in response.headers
    assert "request-id" in response.headers
    assert ok.headers["ratelimit-limit"] == "10"


@pytest.mark.parametrize(
    "lengths",
    [[b"abc"], [b"-1"], [b"+5"], [b"1e3"], [b""], [b"10", b"11"], [b"9" * 5000]],
)
async def test_malformed_content_length_is_400(lengths: list[bytes]) -> None:
    """Content-Length must be one non-negative decimal integer (repeats must agree)."""
    app = EchoApp()
    layer = BodyLimitLayer(app, max_body=MAX_BODY, max_upload=MAX_UPLOAD)
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", value) for value in lengths]
    response = await drive(layer, http_scope(headers=headers), [b"{}"])
    assert response.status == 400
    assert error_of(response.json())["code"] == "invalid_content_length"
    assert app.calls == 0


async def test_repeated_identical_content_lengths_are_accepted() -> None:
    """Two equal Content-Length values mean one length."""
    app = EchoApp()
    layer = BodyLimitLayer(app, max_body=MAX_BODY, max_upload=MAX_UPLOAD)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"content-length", b"2"),
    ]
    response = await drive(layer, http_scope(headers=headers), [b"{}"])
    assert response.status == 200


def test_negative_limits_are_rejected() -> None:
    """A negative limit is a configuration error, not a silent 413 for everything."""
    with pytest.raises(ValueError, match="negative"):
        BodyLimitLayer(EchoApp(), max_body=-1, max_upload=10)
