"""The /dashboard page in headless Chromium: sign in, find a request by its id, see its replays.

Runs Debian's ``chromium`` through Playwright (no browser download). Skips with the
reason when either is missing; the root conftest fails such a skip under CI=true.
Set ``RETRYSAFE_DASHBOARD_SCREENSHOT=path.png`` to keep a screenshot of the open
request (that is how docs/dashboard.png is made).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_for_entries(http: httpx.Client, key: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = http.get("/api-logs", params={"filter[idempotency_key]": key}).json()["data"]
        if len(found) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the API log never showed {count} requests with key {key}")


def test_find_a_request_by_id_and_see_its_replays(
    browser: Any, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = live_server(api_log_flush_interval=0.05)
    secret = server.new_key()
    body = {"data": {"attributes": {"reference_id": "user-42", "name_first": "Ada"}}}
    key = {"Idempotency-Key": "signup-user-42"}
    with server.client(secret) as http:
        original = http.post("/accounts", json=body, headers=key)
        replays = [http.post("/accounts", json=body, headers=key) for _ in range(2)]
        other = http.get("/accounts/act_00000000000000000000000000")  # noise: a 404
        wait_for_entries(http, "signup-user-42", 3)
    assert original.status_code == 201
    assert [r.headers["idempotent-replayed"] for r in replays] == ["true", "true"]
    assert other.status_code == 404
    request_id = original.headers["request-id"]

    page = browser.new_page(viewport={"width": 1400, "height": 820})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{server.url}/dashboard")
        page.fill("#api-key", secret)
        page.click("#sign-in-form button[type=submit]")
        # Signed in: the newest requests are listed without a filter.
        page.wait_for_selector("#log-rows tr.log-row")
        assert page.locator("#log-rows tr.log-row").count() == 4

        page.fill("#filter-request-id", request_id)
        page.click("#search")
        row = page.locator("#log-rows tr.log-row")
        expect(row).to_have_count(1)  # the page's CSP forbids wait_for_function's eval
        assert row.locator(".request-id").inner_text() == request_id
        assert row.locator(".status").inner_text() == "201"
        assert "status-2xx" in (row.locator(".status").get_attribute("class") or "")
        assert row.locator(".outcome").inner_text() == "executed"

        row.click()
        items = page.locator("#timeline li.timeline-item")
        expect(items).to_have_count(3)
        outcomes = [items.nth(i).locator(".outcome").inner_text() for i in range(3)]
        assert outcomes == ["executed", "replayed", "replayed"]
        timeline_ids = [items.nth(i).locator(".request-id").inner_text() for i in range(3)]
        assert timeline_ids == [request_id, *(r.headers["request-id"] for r in replays)]
        assert "current" in (items.nth(0).get_attribute("class") or "")
        assert "timeline-replayed" in (items.nth(1).get_attribute("class") or "")
        assert page.locator("#detail-request-id").inner_text() == request_id
        assert "2 replays" in page.locator("#timeline-note").inner_text()

        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        if target := os.environ.get("RETRYSAFE_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(screenshot, target)

        # A wrong key sends the page back to the sign-in form with the reason.
        page.evaluate("sessionStorage.setItem('retrysafe.apiKey', 'rsk_key_0.wrong')")
        page.click("#search")
        page.wait_for_selector("#sign-in:not([hidden])")
        assert "refused" in page.locator("#sign-in-error").inner_text()
    finally:
        page.close()
    assert errors == []


def test_the_page_is_served_without_a_key_and_locked_down(server: LiveServer) -> None:
    """The assets need no key; a strict CSP keeps scripts and requests on this origin."""
    page = httpx.get(f"{server.url}/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = httpx.get(f"{server.url}/dashboard/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)
    assert "http" not in page.text.replace(server.url, "")  # no external asset
