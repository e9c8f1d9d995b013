"""Under CI=true the dashboard's browser test may not skip: the root conftest fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.inner_pytest import run_pytest

MARKERS = {"browser": "drives Chromium"}

BROWSER_SKIPS = """\
import pytest

def test_runs():
    pass

@pytest.mark.browser
def test_browser_by_marker():
    pytest.skip("no display")

def test_chromium_by_reason():
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
"""


def test_browser_skips_pass_locally(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, BROWSER_SKIPS, markers=MARKERS, ci=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout


def test_browser_skips_fail_under_ci(tmp_path: Path) -> None:
    """A browser-marked skip, or one whose reason names Chromium, fails the CI run."""
    result = run_pytest(tmp_path, BROWSER_SKIPS, markers=MARKERS, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "test_browser_by_marker" in result.stdout
    assert "test_chromium_by_reason" in result.stdout
