"""``serve`` refuses to start in one line, before its banner: port in use, unknown host, bad dir.

Real processes: the failure must be one ``retrysafe: error:`` line on stderr and
exit 1, with no "Application startup complete", no JSON log line, and no database
created for a server that never ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_process import run_cli


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_refused(result: subprocess.CompletedProcess[str], tmp_path: Path, expected: str) -> None:
    assert result.returncode == 1, result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [f"retrysafe: error: {expected}"]
    assert result.stdout == ""  # no log line: uvicorn never started
    assert not (tmp_path / "retrysafe.db").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_and_exit_1(
    tmp_path: Path, taken_port: int, workers: str
) -> None:
    result = run_cli("serve", "--port", str(taken_port), "--workers", workers, cwd=tmp_path)
    expected = f"cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    assert_refused(result, tmp_path, expected)


def test_an_unknown_host_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "no-such-host.invalid", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("retrysafe: error: cannot listen on no-such-host.invalid:0: ")
    assert result.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_an_unwritable_document_dir_is_refused_before_serving(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli(
            "serve", "--port", "0", "--document-dir", str(locked / "docs"), cwd=tmp_path
        )
    finally:
        locked.chmod(0o700)
    assert_refused(
        result, tmp_path, f"cannot write to --document-dir {locked / 'docs'}: Permission denied"
    )


def test_a_document_dir_that_is_a_file_is_refused_before_serving(tmp_path: Path) -> None:
    """Refused for root too: no one can create files inside a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = run_cli("serve", "--port", "0", "--document-dir", str(blocker), cwd=tmp_path)
    assert_refused(result, tmp_path, f"cannot write to --document-dir {blocker}: File exists")
