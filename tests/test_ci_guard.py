"""The root conftest turns skipped PostgreSQL/Redis tests into a failed run under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.inner_pytest import XDIST, run_pytest

MARKERS = {"postgres": "needs PostgreSQL", "redis": "needs Redis"}

SERIAL_AND_XDIST = pytest.mark.parametrize("args", [(), XDIST], ids=["serial", "xdist"])
"""On xdist the controller decides the exit status from the reports its workers send."""

SERVICE_SKIPS = """\
import pytest

def test_runs():
    pass

def test_postgres_by_reason():
    pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")

@pytest.mark.redis
def test_redis_by_marker():
    pytest.skip("server not running")
"""

UNRELATED_SKIP = """\
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="only meaningful on Windows")
def test_windows():
    pass
"""

MODULE_SKIP = """\
import pytest

pytest.skip("no Redis server", allow_module_level=True)
"""

FAILING = """\
import pytest

def test_fails():
    assert False

def test_postgres():
    pytest.skip("PostgreSQL down")
"""


def test_service_skips_pass_locally(tmp_path: Path) -> None:
    """Without CI the suite passes with its service tests skipped."""
    result = run_pytest(tmp_path, SERVICE_SKIPS, markers=MARKERS, ci=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout


@SERIAL_AND_XDIST
def test_service_skips_fail_under_ci(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Under CI=true a skip mentioning PostgreSQL, or of a redis-marked test, fails the run."""
    result = run_pytest(tmp_path, SERVICE_SKIPS, markers=MARKERS, ci=True, args=args)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "service tests were skipped" in result.stdout
    assert "test_postgres_by_reason" in result.stdout
    assert "test_redis_by_marker" in result.stdout


@SERIAL_AND_XDIST
def test_module_level_service_skip_fails_under_ci(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A whole module skipped for want of Redis counts as well."""
    result = run_pytest(tmp_path, MODULE_SKIP, markers=MARKERS, ci=True, args=args)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "no Redis server" in result.stdout


@SERIAL_AND_XDIST
def test_unrelated_skip_passes_under_ci(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Skips that have nothing to do with PostgreSQL or Redis stay plain skips."""
    result = run_pytest(tmp_path, UNRELATED_SKIP, markers=MARKERS, ci=True, args=args)
    assert result.returncode == 0, result.stdout
    assert "service tests were skipped" not in result.stdout


def test_failures_keep_their_status_under_ci(tmp_path: Path) -> None:
    """A real failure is still reported as one, with the skip listed beside it."""
    result = run_pytest(tmp_path, FAILING, markers=MARKERS, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 failed" in result.stdout
    assert "PostgreSQL down" in result.stdout
