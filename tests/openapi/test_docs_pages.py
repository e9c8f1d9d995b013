"""/docs and /redoc work offline: they load only files this server serves from the package.

The HTTP tests read each page's ``src``/``href`` references and fetch them; the
browser tests open both pages in headless Chromium with every request to another
origin aborted, and wait for the rendered operations, with no CSP violation.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from importlib import resources
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from tests.conftest import LiveServer

# The dashboard's Chromium fixture: the same browser, launched the same way.
from tests.dashboard.test_dashboard_browser import TIMEOUT_MS, browser  # noqa: F401

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css"}
VENDORED = {
    # Also in src/retrysafe/service/api_docs/README.md, with where each file comes from.
    "swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "redoc.standalone.js": "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b",
}


class References(HTMLParser):
    """Every URL an HTML page makes the browser load (or, for spec-url, fetch)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value is not None:
                self.urls.append(value)


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize(("page", "expected"), [("/docs", 3), ("/redoc", 2)])
def test_the_page_loads_only_files_of_this_server(
    server: LiveServer, page: str, expected: int
) -> None:
    response = httpx.get(server.url + page)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "http" not in csp  # no other origin is allowed anything
    urls = references(response.text)
    assert len(urls) == expected, urls
    for url in urls:
        absolute = urljoin(str(response.url), url)
        assert urlsplit(absolute).netloc == urlsplit(server.url).netloc, url
        asset = httpx.get(absolute)
        assert asset.status_code == 200, url
        suffix = "." + url.rpartition(".")[2]
        if suffix in MEDIA_TYPES:
            assert asset.headers["content-type"].startswith(MEDIA_TYPES[suffix]), url
            assert asset.headers["x-content-type-options"] == "nosniff"
        else:
            assert url == "openapi.json"
            assert asset.json()["paths"]


def test_the_pages_need_no_api_key_and_the_init_script_reads_this_document(
    server: LiveServer,
) -> None:
    script = httpx.get(server.url + "/docs/swagger-init.js")
    assert script.status_code == 200
    assert re.search(r'url: "openapi\.json"', script.text)
    assert "validatorUrl: null" in script.text  # the default badge calls an outside service


def test_the_vendored_files_are_the_released_ones() -> None:
    package = resources.files("retrysafe.service.api_docs")
    for name, digest in VENDORED.items():
        assert hashlib.sha256(package.joinpath(name).read_bytes()).hexdigest() == digest, name
    for licence in ("LICENSE-swagger-ui.txt", "NOTICE-swagger-ui.txt", "LICENSE-redoc.txt"):
        assert package.joinpath(licence).read_text().strip(), licence


def offline_page(chromium: Any, url: str) -> tuple[Any, Any, list[str]]:
    """A page that may talk to ``url``'s origin only, and the live list of what went wrong."""
    context = chromium.new_context()
    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(url))
    problems: list[str] = []

    def only_this_origin(route: Any) -> None:
        if route.request.url.startswith((origin, "blob:", "data:")):
            route.continue_()
        else:
            problems.append(f"request to another origin: {route.request.url}")
            route.abort()

    context.route("**/*", only_this_origin)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    return context, page, problems


@pytest.mark.browser
@pytest.mark.slow
def test_swagger_ui_renders_every_operation_offline(
    browser: Any,  # noqa: F811
    server: LiveServer,
) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    context, page, problems = offline_page(browser, server.url + "/docs")
    try:
        page.wait_for_selector(".opblock-summary", timeout=TIMEOUT_MS)
        rendered = page.locator(".opblock-summary").count()
        assert rendered == sum(len(item) for item in paths.values())
        assert problems == []
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_redoc_renders_the_operations_offline(
    browser: Any,  # noqa: F811
    server: LiveServer,
) -> None:
    context, page, problems = offline_page(browser, server.url + "/redoc")
    try:
        for summary in ("Create an account", "Complete an inquiry"):
            page.get_by_role("heading", name=summary).first.wait_for(timeout=TIMEOUT_MS)
        # ReDoc's "API docs by Redocly" footer shows a logo from its CDN; the policy stops
        # the load in the browser (nothing leaves), and ReDoc then leaves the image out.
        blocked_logo = [p for p in problems if "cdn.redoc.ly/redoc/logo-mini.svg" in p]
        assert all("Content Security Policy" in p for p in blocked_logo), blocked_logo
        assert [p for p in problems if p not in blocked_logo] == []
    finally:
        context.close()
