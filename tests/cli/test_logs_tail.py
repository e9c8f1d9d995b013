"""``logs tail``, ``purge-expired`` of API logs, and the progress bars of long commands."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import migrate, with_database
from tests.support.records import request_record

from retrysafe.database import Database
from retrysafe.observability import Metrics, RequestRecord
from retrysafe.observability.api_log_writer import ApiLogWriter
from retrysafe.service import admin
from server_process import CLI, clean_env

from .conftest import MainRunner

DAY = 24 * 60 * 60


def record(request_id: str, *, status: int = 200, **fields: object) -> RequestRecord:
    """A logged request as these tests print it: a 200, no organization, key or outcome."""
    plain: dict[str, object] = {
        "duration_ms": 3.25,
        "organization_id": None,
        "idempotency_key": None,
        "outcome": None,
    }
    return request_record(request_id, status=status, **{**plain, **fields})


def write(db_url: str, *records: RequestRecord) -> None:
    async def insert(db: Database) -> None:
        writer = ApiLogWriter(db, Metrics())
        for item in records:
            writer.submit(item)
        assert await writer.flush()

    with_database(db_url, insert)


def organization(db_url: str, name: str) -> str:
    async def create(db: Database) -> str:
        return (await admin.create_organization(db, name))[0]

    return with_database(db_url, create)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    migrate(url)
    return url


def test_tail_prints_the_newest_entries_oldest_first(run_main: MainRunner, db_url: str) -> None:
    write(db_url, *(record(f"req_{n}") for n in range(5)))
    outcome = run_main("logs", "tail", "--no-follow", "-n", "3", "--database", db_url)
    assert outcome.exit_code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert [re.search(r"req_\d", line).group() for line in lines] == ["req_2", "req_3", "req_4"]  # type: ignore[union-attr]
    assert "200  POST /api/v1/accounts  3.2ms" in lines[0]


def test_tail_filters_by_organization_key_and_status(run_main: MainRunner, db_url: str) -> None:
    acme, globex = organization(db_url, "acme"), organization(db_url, "globex")
    write(
        db_url,
        record("req_acme_ok", organization_id=acme),
        record("req_acme_bad", organization_id=acme, status=422, error_code="invalid_value"),
        record("req_globex", organization_id=globex, api_key_id="key_g"),
    )

    def request_ids(*args: str) -> list[str]:
        outcome = run_main("logs", "tail", "--no-follow", "--output", "json", *args)
        assert outcome.exit_code == 0, outcome.stderr
        return [json.loads(line)["request_id"] for line in outcome.stdout.splitlines()]

    base = ("--database", db_url)
    assert request_ids("--org", "acme", *base) == ["req_acme_ok", "req_acme_bad"]
    assert request_ids("--org", acme, "--status", "4xx", *base) == ["req_acme_bad"]
    assert request_ids("--key", "key_g", *base) == ["req_globex"]
    assert request_ids("--status", "201", *base) == []
    unknown = run_main("logs", "tail", "--no-follow", "--org", "initech", *base)
    assert unknown.exit_code == 1
    assert "no organization named 'initech'" in unknown.stderr
    bad = run_main("logs", "tail", "--no-follow", "--status", "4x", *base)
    assert bad.exit_code == 2


@pytest.mark.slow
def test_tail_follows_new_entries_as_they_are_written(tmp_path: Path, db_url: str) -> None:
    """A real process: entries written after it started appear, in order, without a backlog."""
    write(db_url, record("req_before"))
    process = subprocess.Popen(
        [*CLI, "logs", "tail", "-n", "0", "--interval", "0.1", "--database", db_url],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Entries written before it follows would be backlog, which -n 0 leaves out.
        assert process.stderr is not None
        # The line naming the database comes first, then the one saying it follows.
        said = ""
        deadline = time.monotonic() + 30
        while "following" not in said:
            ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
            assert ready, said
            said += os.read(process.stderr.fileno(), 4096).decode()
        write(db_url, record("req_after_1"), record("req_after_2", status=503))
        lines = _read_lines(process, count=2, timeout=20)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert "req_after_1" in lines[0]
    assert "req_after_2" in lines[1]
    assert "503" in lines[1]
    assert not any("req_before" in line for line in lines)


def _read_lines(process: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """At least ``count`` whole lines of stdout, every whole line that came with them.

    Read from the pipe itself, never through ``process.stdout``: its ``readline``
    takes in all the pipe holds, so a second line printed with the first would sit
    in that buffer while ``select`` waited on an empty pipe for it.
    """
    assert process.stdout is not None
    said = b""
    deadline = time.monotonic() + timeout
    while said.count(b"\n") < count:
        wait = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([process.stdout], [], [], wait)
        assert ready, f"logs tail printed {said!r} and nothing more in time"
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, f"logs tail ended after printing {said!r}"
        said += chunk
    return said[: said.rindex(b"\n")].decode().split("\n")


def test_purge_expired_deletes_api_logs_past_the_retention(
    run_main: MainRunner, db_url: str
) -> None:
    write(
        db_url,
        record("req_old", started_at=time.time() - 2 * DAY),
        record("req_new"),
    )
    outcome = run_main("purge-expired", "--api-log-retention", str(DAY), "--database", db_url)
    assert outcome.exit_code == 0, outcome.stderr
    assert "Purged 1 API-log entry" in outcome.stdout
    left = run_main("logs", "tail", "--no-follow", "--output", "json", "--database", db_url)
    assert [json.loads(line)["request_id"] for line in left.stdout.splitlines()] == ["req_new"]


def test_a_retention_of_zero_keeps_api_logs(run_main: MainRunner, db_url: str) -> None:
    write(db_url, record("req_old", started_at=time.time() - 400 * DAY))
    outcome = run_main("purge-expired", "--api-log-retention", "0", "--database", db_url)
    assert "Purged 0 API-log entries" in outcome.stdout


@pytest.mark.slow
def test_migrate_draws_a_progress_bar_in_a_terminal(tmp_path: Path) -> None:
    """On a terminal the bar counts the revisions applied; stdout keeps its one result line."""
    parent, child = pty.openpty()
    url = f"sqlite:///{tmp_path / 'new.db'}"
    process = subprocess.Popen(
        [*CLI, "migrate", "--database", url],
        cwd=tmp_path,
        env=clean_env({"COLUMNS": "100", "TERM": "xterm"}),
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 1)
        if ready:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=10)
    os.close(parent)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    assert process.returncode == 0, text
    assert re.search(r"Migrating\D*(\d+)/\1\b", text), text
    assert "is at the newest schema" in text
