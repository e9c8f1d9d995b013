"""``retrysafe serve`` as a real process: settings reach the app, bad input never starts it."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from server_process import ServerProcess, run_cli, start_server

from .conftest import MainRunner

BIG_BODY = {"data": {"attributes": {"name_first": "x" * 200}}}


def new_key(tmp_path: Path, db_url: str) -> tuple[str, str]:
    """(key_id, secret) of a fresh key for organization acme."""
    result = run_cli("keys", "create", "--org", "acme", "--database", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.splitlines()[-1]
    return secret.removeprefix("rsk_").partition(".")[0], secret


@pytest.mark.slow
def test_serve_migrates_answers_health_and_logs_where_it_listens(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """A new SQLite file is created and migrated; /health answers; SIGTERM shuts down cleanly."""
    db_path = tmp_path / "fresh" / "serve.db"
    server = start_server(["--database", f"sqlite:///{db_path}"], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    assert db_path.exists()
    assert f"created a new, empty database at {db_path}" in server.log()
    assert f"serving http://127.0.0.1:{server.port} from {db_path} with 1 process" in server.log()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_serve_reads_every_setting_from_the_environment(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """RETRYSAFE_PORT, _DATABASE, _MAX_BODY, _RATE_LIMIT and _LOG_LEVEL configure the server."""
    db_path = tmp_path / "env.db"
    env = {
        "RETRYSAFE_DATABASE": f"sqlite:///{db_path}",
        "RETRYSAFE_MAX_BODY": "64",
        "RETRYSAFE_RATE_LIMIT": "1000/minute",
        "RETRYSAFE_LOG_LEVEL": "warning",
    }
    server = start_server([], cwd=tmp_path, env=env, port_from_env=True)
    processes.append(server)
    server.wait_healthy()
    assert db_path.exists()
    assert f"from {db_path} (from RETRYSAFE_DATABASE) with 1 process" in server.log()

    too_big = httpx.post(f"{server.base_url}/api/v1/accounts", json=BIG_BODY, timeout=10)
    assert too_big.status_code == 413
    assert too_big.json()["errors"][0]["code"] == "payload_too_large"

    limited = httpx.get(f"{server.base_url}/api/v1/accounts", timeout=10)
    assert limited.status_code == 401
    assert limited.headers["RateLimit-Limit"] == "1000"
    # At warning, uvicorn's info lines (startup, access log) are not written.
    assert "Application startup complete" not in server.log()
    assert "GET /api/v1/accounts" not in server.log()


@pytest.mark.slow
def test_serve_workers_receive_the_same_settings(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """With --workers 2 the worker processes get the flags through RETRYSAFE_* variables."""
    db_url = f"sqlite:///{tmp_path / 'workers.db'}"
    server = start_server(
        ["--workers", "2", "--database", db_url, "--max-body", "64", "--rate-limit", "77/minute"],
        cwd=tmp_path,
    )
    processes.append(server)
    server.wait_healthy(timeout=45)
    assert "with 2 processes" in server.log()
    for _ in range(4):  # several requests, so both workers are likely to answer one
        too_big = httpx.post(f"{server.base_url}/api/v1/accounts", json=BIG_BODY, timeout=10)
        assert too_big.status_code == 413
        limited = httpx.get(f"{server.base_url}/api/v1/accounts", timeout=10)
        assert limited.headers["RateLimit-Limit"] == "77"


@pytest.mark.slow
def test_revoked_key_is_refused_by_the_server(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """keys create / keys revoke act on the database the server reads."""
    db_url = f"sqlite:///{tmp_path / 'keys.db'}"
    _, kept = new_key(tmp_path, db_url)
    revoked_id, revoked = new_key(tmp_path, db_url)
    assert run_cli("keys", "revoke", revoked_id, "--database", db_url, cwd=tmp_path).returncode == 0

    server = start_server(["--database", db_url], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    url = f"{server.base_url}/api/v1/accounts"
    assert (
        httpx.get(url, headers={"Authorization": f"Bearer {kept}"}, timeout=10).status_code == 200
    )
    refused = httpx.get(url, headers={"Authorization": f"Bearer {revoked}"}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--database", "mysql://db/x"], "--database / RETRYSAFE_DATABASE"),
        (["--rate-limit", "lots"], "--rate-limit / RETRYSAFE_RATE_LIMIT"),
        (["--rate-limit", "0/second"], "--rate-limit / RETRYSAFE_RATE_LIMIT"),
        (["--max-body", "-1"], "--max-body / RETRYSAFE_MAX_BODY"),
        (["--max-upload", "0"], "--max-upload / RETRYSAFE_MAX_UPLOAD"),
        (["--request-timeout", "-3"], "--request-timeout / RETRYSAFE_REQUEST_TIMEOUT"),
        (["--max-in-flight", "0"], "--max-in-flight / RETRYSAFE_MAX_IN_FLIGHT"),
        (["--idempotency-ttl", "-60"], "--idempotency-ttl / RETRYSAFE_IDEMPOTENCY_TTL"),
        (["--redis", "http://cache:6379"], "--redis / RETRYSAFE_REDIS"),
        (["--provider-url", "provider:8001"], "--provider-url / RETRYSAFE_PROVIDER_URL"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(
    run_main: MainRunner, tmp_path: Path, args: list[str], expected: str
) -> None:
    """Each unusable value exits 2 with one line naming the flag and variable; nothing starts."""
    result = run_main("serve", *args)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"retrysafe: error: {expected}")
    assert not (tmp_path / "retrysafe.db").exists()


def test_serve_refuses_bad_settings_from_the_environment(run_main: MainRunner) -> None:
    """A bad RETRYSAFE_* value is refused the same way as a bad flag."""
    result = run_main("serve", env={"RETRYSAFE_MAX_IN_FLIGHT": "-5"})
    assert result.exit_code == 2
    assert "RETRYSAFE_MAX_IN_FLIGHT must be at least 1" in result.stderr


def test_bad_setting_in_a_real_process_is_one_line(tmp_path: Path) -> None:
    """From the installed entry point too: one line, exit 2, no traceback, nothing served."""
    result = run_cli("serve", "--rate-limit", "lots", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("retrysafe: error: --rate-limit / RETRYSAFE_RATE_LIMIT")


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "eighty"],
        ["--port", "70000"],
        ["--workers", "0"],
        ["--max-body", "1MB"],
        ["--log-level", "loud"],
        ["--no-such-flag"],
    ],
)
def test_serve_flag_parse_errors_exit_2(run_main: MainRunner, args: list[str]) -> None:
    """Values click cannot parse get its usage message and exit 2."""
    result = run_main("serve", *args)
    assert result.exit_code == 2
    assert "Error:" in result.stderr


def test_flag_parse_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "eighty", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid value for '--port'" in result.stderr


def test_serve_with_unreachable_database_fails_cleanly(tmp_path: Path) -> None:
    """serve migrates first; a database it cannot reach is one line and exit 1."""
    url = "postgresql://retrysafe:hunter2@127.0.0.1:1/retrysafe"
    result = run_cli("serve", "--port", "0", "--database", url, cwd=tmp_path, timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("retrysafe: error: cannot use the database")
    assert "hunter2" not in line
