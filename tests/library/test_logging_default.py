"""RetrySafe's logging default: quiet and cheap unless asked, and the app's own structlog kept.

Each case runs in a fresh interpreter: structlog's configuration is process-wide,
and the test process has its own (tests/conftest.py routes it to stdlib logging).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SERVE_TWO_REQUESTS = """
import asyncio, httpx
from retrysafe.asgi import RetrySafe, single_tenant

async def created(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})

async def main():
    app = RetrySafe(created, store="memory://", tenant=single_tenant(), **OPTIONS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for _ in range(2):
            await http.post("/orders", headers={"Idempotency-Key": "k"})

asyncio.run(main())
"""


def stdout_of(prelude: str, options: str) -> str:
    program = prelude + f"OPTIONS = {options}\n" + SERVE_TWO_REQUESTS
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    return result.stdout


def test_by_default_a_mounted_app_prints_no_request_line() -> None:
    assert stdout_of("", "{}") == ""


def test_log_level_info_prints_every_request_line_as_json() -> None:
    lines = stdout_of("", "{'log_level': 'info'}").splitlines()
    assert len(lines) == 2
    assert all('"event": "request"' in line for line in lines)
    assert '"outcome": "executed"' in lines[0]
    assert '"outcome": "replayed"' in lines[1]


def test_an_apps_own_structlog_configuration_is_kept() -> None:
    prelude = (
        "import structlog\n"
        "structlog.configure(processors=[lambda _l, _m, event: {**event, 'app': 'mine'},"
        " structlog.processors.KeyValueRenderer(key_order=['app', 'event'])])\n"
    )
    lines = stdout_of(prelude, "{}").splitlines()
    assert len(lines) == 2
    assert all(line.startswith("app='mine' event='request'") for line in lines)
