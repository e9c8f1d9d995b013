"""Real ``retrysafe serve`` processes: the JSON request line, console text, /metrics of workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from server_process import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.slow


def new_key(tmp_path: Path, db_url: str) -> str:
    result = run_cli("keys", "create", "--org", "acme", "--database", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_each_request_is_one_json_line_without_secrets(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'json.db'}"
    secret = new_key(tmp_path, db_url)
    server = start_server(["--database", db_url], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "log-line-1"}
    body = {"data": {"attributes": {"name_first": "Ada Lovelace"}}}
    response = httpx.post(f"{server.base_url}/api/v1/accounts", json=body, headers=headers)
    assert response.status_code == 201
    server.stop()
    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    requests = [e for e in events if e.get("request_id") == response.headers["request-id"]]
    [event] = requests
    assert event["event"] == "request"
    assert event["status"] == 201
    assert event["route"] == "/api/v1/accounts"
    assert event["idempotency_key"] == "log-line-1"
    assert event["outcome"] == "executed"
    assert event["organization_id"].startswith("org_")
    assert any(e.get("logger") == "uvicorn.error" for e in events)  # uvicorn's lines too
    assert secret not in server.log()
    assert secret.partition(".")[2] not in server.log()
    assert "Ada Lovelace" not in server.log()


def test_console_format_is_text(tmp_path: Path, processes: list[ServerProcess]) -> None:
    db_url = f"sqlite:///{tmp_path / 'console.db'}"
    server = start_server(
        ["--database", db_url], cwd=tmp_path, env={"RETRYSAFE_LOG_FORMAT": "console"}
    )
    processes.append(server)
    server.wait_healthy()
    response = httpx.get(f"{server.base_url}/api/v1/accounts")
    assert response.status_code == 401
    server.stop()
    [line] = [line for line in server.log().splitlines() if response.headers["request-id"] in line]
    assert not line.startswith("{")
    assert re.search(r"request\s.*status=401", line)


def test_metrics_count_every_worker_whichever_answers_the_scrape(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """serve --workers 2: requests spread over both; every scrape reports them all."""
    db_url = f"sqlite:///{tmp_path / 'workers.db'}"
    secret = new_key(tmp_path, db_url)
    server = start_server(["--database", db_url, "--workers", "2"], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    sent = 24
    for _ in range(sent):  # a new connection each: the kernel spreads them over the workers
        response = httpx.get(
            f"{server.base_url}/api/v1/accounts", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 200
    line = 'retrysafe_http_requests_total{method="GET",route="/api/v1/accounts",status="200"}'
    for _ in range(6):
        text = httpx.get(f"{server.base_url}/metrics").text
        assert f"{line} {float(sent)}" in text, text[:2000]
        # Only the multiprocess collector leaves out the *_created samples.
        assert "retrysafe_http_requests_created" not in text


def test_metrics_need_no_key_and_are_not_rate_limited(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'scrape.db'}"
    server = start_server(["--database", db_url, "--rate-limit", "2/minute"], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    answers = [httpx.get(f"{server.base_url}/metrics") for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert answers[0].headers["content-type"].startswith("text/plain")
    assert "ratelimit-limit" not in answers[0].headers
