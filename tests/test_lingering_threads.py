"""A run whose tests leave a non-daemon thread running fails, instead of hanging at exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.inner_pytest import XDIST, run_pytest

LEAKS_A_THREAD = """\
import threading

never = threading.Event()

def test_leaves_a_worker_behind():
    threading.Thread(target=never.wait, name="leaked-worker").start()
"""

JOINS_ITS_THREAD = """\
import threading
import time

def test_a_thread_that_ends_soon_after():
    threading.Thread(target=time.sleep, args=(0.5,), name="short-lived").start()
"""


SERIAL_AND_XDIST = pytest.mark.parametrize("args", [(), XDIST], ids=["serial", "xdist"])
"""On xdist the thread is left on a worker, and the controller fails the run for it."""


@SERIAL_AND_XDIST
def test_a_leaked_thread_fails_the_run_instead_of_hanging_it(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    # run_pytest's own 60 s timeout is what a hang would hit.
    result = run_pytest(tmp_path, LEAKS_A_THREAD, markers={}, ci=False, args=args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "leaked-worker" in result.stderr
    assert "still running after the session" in result.stderr


@SERIAL_AND_XDIST
def test_a_thread_that_finishes_within_the_grace_passes(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_pytest(tmp_path, JOINS_ITS_THREAD, markers={}, ci=False, args=args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "still running" not in result.stderr
