"""Under CI=true the dashboard's browser test may not skip: the root conftest fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"

INI = """\
[pytest]
markers =
    browser: drives Chromium
"""

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


def run_pytest(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT_CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_sample.py").write_text(BROWSER_SKIPS)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_browser_skips_pass_locally(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout


def test_browser_skips_fail_under_ci(tmp_path: Path) -> None:
    """A browser-marked skip, or one whose reason names Chromium, fails the CI run."""
    result = run_pytest(tmp_path, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "test_browser_by_marker" in result.stdout
    assert "test_chromium_by_reason" in result.stdout
