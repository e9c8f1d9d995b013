"""A tiny suite run by a pytest of its own, with a copy of the root conftest, for its CI guard."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"


XDIST = ("-p", "xdist", "-n", "2")
"""Arguments that run the inner suite on two pytest-xdist workers, as the suite runs (plugin
autoload is off there, hence ``-p xdist``)."""


def run_pytest(
    directory: Path,
    test_source: str,
    *,
    markers: dict[str, str],
    ci: bool,
    args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``test_source`` in ``directory`` (its own rootdir), with ``CI=true`` or without CI.

    ``args`` go to that pytest, e.g. :data:`XDIST`.
    """
    shutil.copy(ROOT_CONFTEST, directory / "conftest.py")
    declared = "".join(f"    {name}: {help}\n" for name, help in markers.items())
    (directory / "pytest.ini").write_text(f"[pytest]\nmarkers =\n{declared}")
    (directory / "test_sample.py").write_text(test_source)
    # The outer run's xdist worker variables are not the inner run's. Plugin autoload is
    # off: the inner suites use none of the installed plugins, whose imports (hypothesis,
    # faker, schemathesis) took 3 of the 3.2 s of every inner run.
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "CI" and not key.startswith("PYTEST_XDIST_")
    }
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args, str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
