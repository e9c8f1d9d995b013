"""Under ``CI=true``, a test skipped for want of PostgreSQL, Redis or a browser fails the run.

And in any run, a thread left running at the end (a connection a test never closed:
aiosqlite's worker threads are not daemons) fails the run instead of keeping the
interpreter from exiting, which would hang CI until its time limit.

Locally those tests skip so the suite runs with only Python; in CI a skip would hide
that a backend (or the dashboard's browser test) was never exercised, so ``.ci/run``
must not pass with one. This lives
in the root conftest, apart from ``tests/conftest.py``, so it guards every test tree.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

SERVICE_MARKERS = ("postgres", "redis", "browser")
"""Markers of tests that need a server; their skips count as failures under CI."""

SERVICE_WORDS = ("postgres", "redis", "chromium", "playwright")
"""Skip reasons that mention one of these (case-insensitively) count too."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


class ServiceSkipGuard:
    """Collects skips of service-backed tests and fails the session for them under CI."""

    def __init__(self) -> None:
        self.service_test_ids: set[str] = set()
        self.skips: list[str] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.service_test_ids.update(
            item.nodeid
            for item in items
            if any(item.get_closest_marker(name) is not None for name in SERVICE_MARKERS)
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module that skips as a whole (importorskip, allow_module_level) reports here.
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Only turn success (or "no tests") into failure; keep worse statuses as they are.
        ok = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if in_ci() and self.skips and session.exitstatus in ok:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (in_ci() and self.skips):
            return
        terminalreporter.section("CI=true: service tests were skipped", red=True, bold=True)
        terminalreporter.line(
            "PostgreSQL, Redis and Chromium must be there under CI; these did not run:"
        )
        for line in self.skips:
            terminalreporter.line(f"  {line}")

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = _skip_reason(report)
        marked = report.nodeid in self.service_test_ids
        if marked or any(word in reason.lower() for word in SERVICE_WORDS):
            self.skips.append(f"{report.nodeid}: {reason}")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    # A skip's longrepr is (path, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


THREAD_GRACE_SECONDS = 5.0
"""How long threads still running after the session get to finish before the run fails."""


class LingeringThreadGuard:
    """Fails the run, at once, when non-daemon threads outlive the session.

    The interpreter joins such threads before it exits, so one that waits forever
    (a leaked aiosqlite connection's worker) would hang the run after its summary.
    """

    def __init__(self) -> None:
        self.exitstatus = 0

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.exitstatus = int(session.exitstatus)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        deadline = time.monotonic() + THREAD_GRACE_SECONDS
        lingering = _non_daemon_threads()
        for thread in lingering:
            thread.join(max(0.0, deadline - time.monotonic()))
        lingering = _non_daemon_threads()
        if not lingering:
            return
        names = ", ".join(sorted(thread.name for thread in lingering))
        sys.stdout.flush()
        sys.stderr.write(
            f"\nretrysafe tests: {len(lingering)} thread(s) still running after the session "
            f"(a connection or server a test never closed?): {names}. "
            "Failing the run instead of waiting for them.\n"
        )
        sys.stderr.flush()
        os._exit(self.exitstatus or int(pytest.ExitCode.TESTS_FAILED))


def _non_daemon_threads() -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ServiceSkipGuard(), "retrysafe-service-skip-guard")
    config.pluginmanager.register(LingeringThreadGuard(), "retrysafe-lingering-thread-guard")
