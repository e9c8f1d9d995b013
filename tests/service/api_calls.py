"""Small helpers for the service tests: request bodies, creates and envelope checks."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import httpx


def body(**attributes: Any) -> dict[str, Any]:
    """``{"data": {"attributes": attributes}}``."""
    return {"data": {"attributes": attributes}}


def form(**attributes: str) -> dict[str, tuple[None, str]]:
    """The same attributes as multipart fields ``data[attributes][NAME]`` (for ``files=``)."""
    return {f"data[attributes][{name}]": (None, value) for name, value in attributes.items()}


def create_account(http: httpx.Client, **attributes: Any) -> dict[str, Any]:
    response = http.post("/accounts", json=body(**attributes))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def create_inquiry(http: httpx.Client, **attributes: Any) -> dict[str, Any]:
    response = http.post("/inquiries", json=body(**attributes))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def upload(http: httpx.Client, inquiry_id: str, content: bytes, **fields: str) -> httpx.Response:
    files: dict[str, Any] = {"file": ("scan.bin", content, "application/octet-stream")}
    files.update({name: (None, value) for name, value in fields.items()})
    return http.post(f"/inquiries/{inquiry_id}/documents", files=files)


def envelope(
    response: httpx.Response, status: int, code: str | None = None
) -> list[dict[str, Any]]:
    """Assert ``response`` is the SPEC §1 error envelope with ``status``; return its errors.

    ``code``, when given, must be the code of the first error.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    errors: list[dict[str, Any]] = response.json()["errors"]
    assert errors
    for error in errors:
        assert error["status"] == str(status)
        assert error["title"] == HTTPStatus(int(error["status"])).phrase
        assert error["details"]
        assert error["code"]
    if code is not None:
        assert errors[0]["code"] == code, errors
    return errors


def by_pointer(errors: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """``{pointer: (status, code)}`` of every error that has a pointer."""
    return {e["source"]["pointer"]: (e["status"], e["code"]) for e in errors if "source" in e}
